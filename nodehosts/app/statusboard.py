"""The daemon's current `Status` and everything that follows from a new one.

Contract: `StatusBoard.status` is the current value (nodehosts.core.status); `update(new)`
replaces it and tells the outside what changed, in this order: the metrics (generation, stale,
ready), waiting `dump --watch` clients (records or generation moved), the `saved_records_replaced`
and `ready` log lines, and systemd (READY=1 once, STATUS= when its text changed).
`record(new)` replaces it without telling anyone: the Node source's per-event bookkeeping
(resourceVersion, last sync), shown at the next update.

Observers (`observe`, or the process-wide `OBSERVERS` for a wrapper that starts the daemon
through `nodehosts.cli`, as bench/dns/change_latency.py --trace does) are called on the loop
with `(event, status)` at the points of a change's way through the daemon (EVENTS); a board
without observers spends one truth test per point.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from nodehosts.adapters.sdnotify import Notifier
from nodehosts.app.telemetry import DaemonMetrics
from nodehosts.core import status as st
from nodehosts.core.status import Status

log = structlog.get_logger(__name__)

# nodes_changed: a watch event reached the loop; publish_started; records_built: the record
# set is up to the inputs, its decisions logged, no sink touched yet; published: the sinks are
# done (the status is what they hold, the previous one if a sink failed).
EVENTS = ("nodes_changed", "publish_started", "records_built", "published")
Observer = Callable[[str, Status], None]
OBSERVERS: list[Observer] = []


class StatusBoard:
    def __init__(self, notifier: Notifier, metrics: DaemonMetrics) -> None:
        self.status = Status()
        self.metrics = metrics
        self.ready = asyncio.Event()  # set once, with the first live publication
        self._notifier = notifier
        self._sent: str | None = None  # the STATUS= text systemd has
        self._silent = False  # stopping: systemd was told, nothing more
        self._changed: asyncio.Event | None = None  # created by the first waiting watcher
        self._observers: list[Observer] = list(OBSERVERS)

    def observe(self, observer: Observer) -> None:
        """Call `observer(event, status)` at each of EVENTS from now on."""
        self._observers.append(observer)

    def emit(self, event: str) -> None:
        if self._observers:
            for observer in self._observers:
                observer(event, self.status)

    def record(self, new: Status) -> None:
        self.status = new

    def update(self, new: Status) -> None:
        old, self.status = self.status, new
        if new.generation != old.generation or new.source is not old.source:
            self.metrics.set_generation(new.generation)
        if new.records is not old.records or new.generation != old.generation:
            self._wake_watchers()
        if old.stale and not new.stale:
            self.metrics.set_stale(False)
            log.info("saved_records_replaced", hosts=len(new.records), generation=new.generation)
        elif new.stale and not old.stale:
            self.metrics.set_stale(True)
        if new.ready and not old.ready:
            self.ready.set()
            self.metrics.set_ready(True)
            log.info("ready", hosts=len(new.records), generation=new.generation)
            self._notify(ready=True)
        else:
            self._notify()

    def stopping(self) -> None:
        self._silent = True
        self._notifier.notify(stopping=True, status="stopping")

    def _notify(self, *, ready: bool = False) -> None:
        if not self._notifier.enabled or self._silent:
            return
        text = st.systemd_status(self.status)
        if ready or text != self._sent:
            self._sent = text
            self._notifier.notify(ready=ready, status=text)

    # --- `dump --watch`: a long poll on the control socket

    def _wake_watchers(self) -> None:
        waiting, self._changed = self._changed, None
        if waiting is not None:
            waiting.set()

    async def wait_generation_change(self, after: object, timeout: float) -> None:
        """Return once the generation is not `after` any more, or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.status.generation == after:
                    if self._changed is None:
                        self._changed = asyncio.Event()
                    await self._changed.wait()
