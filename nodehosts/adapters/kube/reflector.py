"""List/watch of one API collection into an Inventory, reported on the asyncio loop.

Contract:

- `CollectionSource` lists and watches one collection (e.g. /api/v1/nodes, or CSRs) into an
  `Inventory`: LIST paged with `limit` (each page dropped after extracting, gc paused during
  the decode), then WATCH from the list's resourceVersion with bookmarks and `timeoutSeconds`,
  tracking the version of every event; after a timeout or a dropped stream it watches again
  from that version; on 410 (an ERROR event or HTTP 410) it relists and rebuilds the state from
  scratch. Any other error (refused, timeout, 5xx, 401/403, bad JSON, config) is logged as one
  `api_error` line, reported, retried after a capped full-jitter backoff, and never loses the
  state: the last good objects stay published. 401/403 and `restart()` rebuild the
  configuration (rotated credentials) before the next request; `restart()` also relists.
- Blocking I/O runs in one worker thread per running source; results reach the asyncio loop via
  `call_soon_threadsafe` and the callbacks run on the loop thread, bursts coalesced into one
  call (the worker posts typed items: `StateChanged`, `Failed`, `Recovered`; runs of
  StateChanged become one callback). Mappings handed out are read-only snapshots that never
  change afterwards. Cancelling `run()` returns within about a second even while a watch is
  blocked (the socket is shut down).
- `list_into(inventory, transport, path)` is the paged LIST alone (`nodes.list_nodes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import structlog

from nodehosts.adapters.kube.errors import KubeApiError, ResourceExpired, describe, status_error
from nodehosts.adapters.kube.listjson import (
    CHUNK_BYTES,
    MAX_LINE_BYTES,
    MAX_PAGE_BYTES,
    decode_event,
    decode_list,
    watch_lines,
)
from nodehosts.adapters.kube.transport import (
    Backoff,
    ClientHolder,
    KubeTransport,
    network_errors,
    transport_error,
)
from nodehosts.core.inventory import BOOKMARK, Inventory
from nodehosts.runtime import gc_paused

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = [
    "CollectionSource",
    "Failed",
    "Posted",
    "Recovered",
    "StateChanged",
    "Tuning",
    "list_into",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The loop thread found the inventory locked (a LIST in progress): try delivering again then.
_FLUSH_RETRY_SECONDS = 0.01


# What the worker thread posts to the loop thread.
class StateChanged(NamedTuple):
    """The inventory changed; `synced`: by a complete LIST. It carries no objects: the loop
    thread takes one snapshot of the inventory when it delivers, however many came meanwhile."""

    synced: bool


class Failed(NamedTuple):
    """A request failed and will be retried; the last state stays valid."""

    reason: str
    message: str


class Recovered(NamedTuple):
    """The first success after failures."""


Posted = StateChanged | Failed | Recovered
_SYNCED, _CHANGED, _RECOVERED = StateChanged(synced=True), StateChanged(synced=False), Recovered()


@dataclass(frozen=True, slots=True)
class Tuning:
    """Knobs of the list/watch loop; the defaults suit a real cluster, tests shrink them."""

    page_size: int = 500
    # The server ends each watch after this long; we then watch again from the last version.
    watch_timeout: float = 240.0
    # A watch silent for watch_timeout + this is taken as a dead connection.
    watch_grace: float = 15.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # Size caps, so no response can take unbounded memory: a LIST page (500 realistic Nodes
    # are ~5-6 MB) and one watch event line (etcd stores objects of at most 1.5 MiB).
    max_page_bytes: int = MAX_PAGE_BYTES
    max_line_bytes: int = MAX_LINE_BYTES


def list_into(
    inventory: Inventory[Any],
    transport: KubeTransport,
    path: str,
    *,
    selectors: Mapping[str, str],
    page_size: int,
) -> int:
    """LIST `path` page by page into `inventory` (replaced only if every page arrives)."""
    pages = 0

    def fetch(token: str | None) -> tuple[Iterator[Any], str, str | None]:
        nonlocal pages
        query = dict(selectors)
        query["limit"] = str(page_size)
        if token:
            query["continue"] = token
        metadata, items = decode_list(transport.request_bytes("GET", path, query=query), path)
        pages += 1
        version = metadata.get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise KubeApiError("bad_response", f"{path}: list without metadata.resourceVersion")
        next_token = metadata.get("continue") or None
        return items, version, next_token

    with gc_paused():  # decoding big JSON: the cyclic gc rescans every new dict (2x slower)
        items, version, token = fetch(None)

        def every_item() -> Iterator[Any]:
            nonlocal items, token
            while True:
                page, items = items, iter(())
                yield from page
                del page  # drop the page before fetching the next one
                if not token:
                    return
                items, _, token = fetch(token)

        inventory.replace(every_item(), version)
    return pages


class CollectionSource(Generic[T]):
    """List/watch one collection into an Inventory forever; report on the asyncio loop.

    The callbacks run on the event loop thread: `on_synced(objects, version)` after every
    complete LIST, `on_changed(objects, version)` when some parsed object changed,
    `on_error(reason, message)` for each failure, and `on_recovered()` (optional) on the first
    success after failures.
    """

    def __init__(
        self,
        configure: Callable[[], Configuration],
        inventory: Inventory[T],
        path: str,
        *,
        on_synced: Callable[[Mapping[str, T], str], None],
        on_changed: Callable[[Mapping[str, T], str], None],
        on_error: Callable[[str, str], None],
        on_recovered: Callable[[], None] | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        tuning: Tuning = Tuning(),
        rng: random.Random | None = None,
    ) -> None:
        self._configure = configure
        self._inventory = inventory
        self.path = path
        self._callbacks = (on_synced, on_changed, on_error, on_recovered)
        self._selectors: dict[str, str] = {}
        if label_selector:
            self._selectors["labelSelector"] = label_selector
        if field_selector:
            self._selectors["fieldSelector"] = field_selector
        self.tuning = tuning
        self._backoff = Backoff(tuning.backoff_base, tuning.backoff_cap, rng=rng)
        self._log = log.bind(path=path)
        self._restart = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._client = ClientHolder(
            configure,
            connect_timeout=tuning.connect_timeout,
            read_timeout=tuning.read_timeout,
            max_body_bytes=tuning.max_page_bytes,
        )
        self._running = False
        self._thread: threading.Thread | None = None
        self._failing = False
        self._attempt = 0
        self._expired_in_a_row = 0
        # Deliveries waiting for the loop thread. A StateChanged carries no objects: the loop
        # thread takes one snapshot of the inventory when it delivers, however many events came
        # meanwhile (a snapshot per event copied the whole map each time: 2000 events x 20,000
        # Nodes ran the RSS from 144 to 832 MB). The worker holds this lock while it changes
        # the inventory.
        self._outbox: list[Posted] = []
        self._outbox_lock = threading.Lock()
        self._inventory_lock = threading.Lock()
        self._flush_scheduled = False

    # ------------------------------------------------------------------ asyncio side

    async def run(self) -> None:
        """List and watch until cancelled; cancellation returns within about a second."""
        if self._running:
            raise RuntimeError(f"source for {self.path} is already running")
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        self._stop = stop
        self._running = True
        done: asyncio.Future[None] = loop.create_future()

        def finished(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def main() -> None:
            error: BaseException | None = None
            try:
                self._work(loop, stop)
            except BaseException as exc:  # a bug: let run() raise it
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(finished, error)

        previous = self._thread
        if previous is not None and previous.is_alive():
            # A worker cancelled without waiting may still be finishing its last read.
            await asyncio.to_thread(previous.join)
        thread = threading.Thread(target=main, name=f"nodehosts-watch{self.path}", daemon=True)
        self._thread = thread
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            stop.set()
            self._wake.set()
            self._client.interrupt()
            # The worker ends at its next check; do not wait for a connect that hangs.
            await asyncio.wait({done}, timeout=1.0)
            raise
        finally:
            stop.set()
            self._running = False

    def restart(self) -> None:
        """Rebuild the client configuration (rotated credentials) and relist, promptly."""
        self._restart.set()
        self._wake.set()
        self._client.interrupt()

    def _post(self, item: Posted, loop: asyncio.AbstractEventLoop) -> None:
        with self._outbox_lock:
            self._outbox.append(item)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is listening any more
            loop.call_soon_threadsafe(self._flush, self._stop)

    def _flush(self, stop: threading.Event) -> None:
        with self._outbox_lock:
            items, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if stop.is_set():
            return
        snapshot: tuple[Mapping[str, T], str] | None = None
        if any(type(item) is StateChanged for item in items):
            # Never wait on the loop thread: the worker holds the lock through a whole LIST.
            if not self._inventory_lock.acquire(blocking=False):
                self._retry_flush(items, stop)
                return
            try:
                snapshot = self._inventory.objects, self._inventory.resource_version
            finally:
                self._inventory_lock.release()
        on_synced, on_changed, on_error, on_recovered = self._callbacks
        # Runs of state updates collapse into one call with the newest state (a sync if any
        # of them was one); errors and recoveries keep their place in between.
        changed = synced = False  # in the current run of StateChanged
        calls: list[Callable[[], None]] = []

        def close_run() -> None:
            nonlocal changed, synced
            if changed and snapshot is not None:
                objects, version = snapshot
                target = on_synced if synced else on_changed
                calls.append(lambda: target(objects, version))
            changed = synced = False

        for item in items:
            if isinstance(item, StateChanged):
                changed, synced = True, synced or item.synced
                continue
            close_run()
            if isinstance(item, Failed):
                calls.append(functools.partial(on_error, item.reason, item.message))
            elif on_recovered is not None:
                calls.append(on_recovered)
        close_run()
        for call in calls:
            try:
                call()
            except Exception:
                self._log.exception("listener_failed")

    def _retry_flush(self, items: list[Posted], stop: threading.Event) -> None:
        """The inventory is being changed (a LIST): deliver these a moment later."""
        with self._outbox_lock:
            self._outbox[:0] = items
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        asyncio.get_running_loop().call_later(_FLUSH_RETRY_SECONDS, self._flush, stop)

    # ------------------------------------------------------------------ worker thread

    def _work(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        need_list = True
        # Consecutive failures (for the backoff) and 410s; both reset once a watch delivers.
        self._attempt = 0
        self._expired_in_a_row = 0
        try:
            while not stop.is_set():
                if self._restart.is_set():
                    self._restart.clear()
                    self._wake.clear()
                    self._client.drop()
                    need_list = True
                    self._log.info("source_restarting")
                try:
                    transport = self._client.current()
                    if need_list:
                        self._list(transport, loop, stop)
                        need_list, self._attempt = False, 0
                    self._watch(transport, loop, stop)
                except ResourceExpired as error:
                    if self._interrupted(stop):
                        continue
                    self._expired_in_a_row += 1
                    need_list = True
                    if self._expired_in_a_row < 3:
                        self._log.info(
                            "relisting",
                            reason="expired",
                            message=error.message,
                            resource_version=self._inventory.resource_version,
                        )
                        continue
                    # Expired again and again right after relisting: something is off; back off.
                    self._failed(error, loop)
                except KubeApiError as error:
                    if self._interrupted(stop):
                        continue
                    self._client.failed(error)  # bad credentials: reload before the next try
                    if error.reason == "response_too_large":
                        # Watching again from the same version would meet the same event:
                        # relist instead (a page has a larger cap than an event line).
                        need_list = True
                    self._failed(error, loop)
                except Exception as error:  # a bug in a parser or here: keep serving
                    if self._interrupted(stop):
                        continue
                    self._log.exception("source_internal_error")
                    self._failed(KubeApiError("internal_error", describe(error)), loop)
        finally:
            self._client.drop()

    def _interrupted(self, stop: threading.Event) -> bool:
        return stop.is_set() or self._restart.is_set()

    def _failed(self, error: KubeApiError, loop: asyncio.AbstractEventLoop) -> None:
        delay = self._backoff.delay(self._attempt)
        self._log.warning(
            "api_error",
            reason=error.reason,
            status=error.status,
            message=error.message,
            retry_in=round(delay, 3),
        )
        self._failing = True
        self._post(Failed(error.reason, error.message), loop)
        self._attempt += 1
        self._wake.wait(delay)
        self._wake.clear()

    def _healthy(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._failing:
            self._failing = False
            self._log.info("api_recovered")
            self._post(_RECOVERED, loop)

    def _list(
        self, transport: KubeTransport, loop: asyncio.AbstractEventLoop, stop: threading.Event
    ) -> None:
        started = time.monotonic()
        with self._inventory_lock:
            pages = list_into(
                self._inventory,
                transport,
                self.path,
                selectors=self._selectors,
                page_size=self.tuning.page_size,
            )
        if stop.is_set():  # cancelled while the last page was being read: nobody listens
            return
        inventory = self._inventory
        self._log.debug(
            "list_complete",
            objects=len(inventory),
            pages=pages,
            resource_version=inventory.resource_version,
            seconds=round(time.monotonic() - started, 3),
        )
        self._healthy(loop)
        self._post(_SYNCED, loop)

    def _watch(
        self, transport: KubeTransport, loop: asyncio.AbstractEventLoop, stop: threading.Event
    ) -> None:
        """One watch from the inventory's version, until the server ends it or it fails."""
        tuning = self.tuning
        started = time.monotonic()
        events = 0
        query = dict(self._selectors)
        query.update(
            watch="true",
            resourceVersion=self._inventory.resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(max(1, round(tuning.watch_timeout))),
        )
        response = transport.open(
            "GET", self.path, query=query, read_timeout=tuning.watch_timeout + tuning.watch_grace
        )
        clean = False
        try:
            if response.status != 200:
                raise status_error(response.status, transport.read(response))
            self._log.debug("watch_started", resource_version=query["resourceVersion"])
            self._healthy(loop)
            lines = watch_lines(
                response.stream(CHUNK_BYTES, decode_content=True), tuning.max_line_bytes
            )
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    break
                except network_errors() as error:
                    raise transport_error(error, transport.base) from error
                if stop.is_set():
                    return
                self._apply(line, loop)
                if events == 0:  # the watch works: failures so far are over
                    self._attempt = self._expired_in_a_row = 0
                events += 1
            clean = True
            self._log.debug("watch_ended", resource_version=self._inventory.resource_version)
        finally:
            transport.finish(response, reuse=clean)
        if events == 0 and time.monotonic() - started < 1.0:
            # Ended at once with nothing: do not spin on a server that closes every watch.
            self._wake.wait(tuning.backoff_base)
            self._wake.clear()

    def _apply(self, line: bytes, loop: asyncio.AbstractEventLoop) -> None:
        event_type, obj = decode_event(line)
        with self._inventory_lock:
            changed = self._inventory.apply(event_type, obj)
        if changed:
            self._post(_CHANGED, loop)
        elif event_type == BOOKMARK:
            self._log.debug("watch_bookmark", resource_version=self._inventory.resource_version)
