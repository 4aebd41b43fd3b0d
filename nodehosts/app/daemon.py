"""The daemon: sources -> one pure record set -> sinks, as named asyncio tasks.

Contract: `Daemon(settings).run()` runs until `stop()` (or SIGTERM/SIGINT via `run_daemon`)
and returns. Nothing is published before the first complete LIST; after that every change
of the inputs (Nodes, static hosts) is published at once when the daemon is idle and
coalesced only while changes keep coming (`_publisher`), the record set is rebuilt
from scratch, and the sinks are touched only when the record set differs from the last one.
When the API is unreachable the last published records simply stay.

Running as a service:

- sd_notify: STATUS= lines as the state changes (node counts, last sync, API errors); READY=1
  once the first complete LIST has been published by every enabled sink (DNS zone loaded and
  hosts file written or found identical); WATCHDOG=1 from the event loop at half WATCHDOG_USEC
  (an API outage does not stop it, a wedged loop does); STOPPING=1 on the way out. Until the
  first sync, EXTEND_TIMEOUT_USEC keeps systemd's start timeout from killing a process that
  is only waiting for the API: a restart would not bring the API sooner, and meanwhile the
  saved records and the DNS forwarder keep serving (no crash loop while the API is down).
- Saved state (`state_dir`): every record set that changed and reached the sinks is saved,
  off the loop. At start a saved set is served by DNS at once, marked stale (metrics, dump,
  STATUS), and the hosts file is left as it is, until the first sync replaces both.
- Live reload: the config file, the static hosts file and the kubeconfig with the credential
  files it names are watched; SIGHUP re-reads all of them on demand. A config that does not
  validate is rejected (`config_rejected`) and the running one stays. `LIVE_KEYS` apply at
  once (a new Settings object is swapped in); the others are kept as they are and logged as
  `config_needs_restart`. New credentials rebuild the API client and the watch resumes.
- `metrics_listen`: Prometheus /metrics, /healthz, /readyz (nodehosts.adapters.metrics).
- `control_socket`: `dump` answers the live state (nodehosts.adapters.control), `watch` the
  same once the generation moves past the client's (`dump --watch`); a socket that cannot be
  bound is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from nodehosts.adapters.hostsfile import HostsFileError, HostsFileWriter
from nodehosts.adapters.sdnotify import Notifier, run_watchdog, watchdog_interval
from nodehosts.config import ConfigError, Settings, file_key
from nodehosts.core.hosts import (
    HostsRenderer,
    parse_hosts,
    read_generation,
    render_file,
    render_hosts,
)
from nodehosts.core.model import (
    Host,
    HostChanges,
    NodeDecision,
    NodeInfo,
    Publication,
    RecordSet,
)
from nodehosts.core.records import RecordIndex
from nodehosts.core.report import publication_report

if TYPE_CHECKING:
    from nodehosts.adapters.metrics import Readiness
    from nodehosts.adapters.state import SavedState, StateStore

log = structlog.get_logger(__name__)
# The longest a `watch` request waits for a change before answering anyway.
WATCH_MAX_WAIT = 60.0

# Bursts (a relist, a rolling kubelet restart) become one rebuild and one write.
COALESCE_SECONDS = 0.05
# ... or, after a publication longer than LONG_PUBLICATION_SECONDS (20,000 Nodes), half the
# time it took, up to MAX_COALESCE_SECONDS. Up to 5000 Nodes the 50 ms stay (issue 3's change
# latency).
LONG_PUBLICATION_SECONDS = 0.3
# Above this many Nodes the records, the DNS answers and the hosts text are built in worker
# threads (DNS answers from the previous cache meanwhile); below, on the loop.
OFF_LOOP_NODES = 8000
MAX_COALESCE_SECONDS = 0.5
# A hosts file that could not be written is tried again after this long.
HOSTS_RETRY_SECONDS = 5.0
# While saved records are served before the first sync: ask systemd for this much more start
# time, again every half of it.
EXTEND_START_SECONDS = 60.0

# Settings applied to the running daemon by a reload. Everything else (listeners, sockets,
# files the daemon owns, the CSR approver) is bound at start and needs a restart.
RECORD_POLICY_KEYS = frozenset(
    {"domain", "address_types", "exclude_not_ready", "exclude_unschedulable"}
) | {"allowed_suffixes", "reserved_suffixes"}
LIVE_KEYS = RECORD_POLICY_KEYS | {
    "static_hosts",
    "kubeconfig",
    "label_selector",
    "log_format",
    "log_level",
}
# The DNS server's zone is built from the domain when it starts.
DNS_ZONE_KEYS = frozenset({"domain"})


# Static hosts are a handful of lines (the LB, a registry): a larger file is a mistake, and
# parsing and publishing it whole would stall DNS (200k lines took seconds) and grow memory.
MAX_STATIC_HOSTS_BYTES = 1 << 20


class StaticHostsError(ValueError):
    """The static hosts file is not usable as a whole (too large, not UTF-8)."""


def read_static_hosts(path: Path | None) -> list[Host]:
    """The operator's extra hosts (blocking). Bad lines are skipped and summarised in one log
    line; a file that is too large or not UTF-8 raises StaticHostsError, unreadable OSError."""
    if path is None:
        return []
    with path.open("rb") as handle:
        data = handle.read(MAX_STATIC_HOSTS_BYTES + 1)
    if len(data) > MAX_STATIC_HOSTS_BYTES:
        raise StaticHostsError(f"{path}: larger than {MAX_STATIC_HOSTS_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StaticHostsError(f"{path}: not UTF-8: {error}") from None
    hosts, problems = parse_hosts(text)
    if problems.total:
        log.warning(
            "static_hosts_lines_skipped", path=str(path), problems=problems.total, first=problems
        )
    return hosts


def hosts_body(text: str) -> str:
    """A rendered file without its header comment (body lines never start with '#')."""
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines) and lines[index].startswith("#"):
        index += 1
    return "".join(lines[index:])


def plan_settings_change(old: Settings, new: Settings) -> tuple[Settings, list[str], list[str]]:
    """What a reload does: (settings to run with, fields applied live, fields needing a restart).

    The fields that need a restart keep their running values in the returned settings.
    """
    changed = [
        f.name
        for f in fields(Settings)
        if f.compare and getattr(old, f.name) != getattr(new, f.name)
    ]
    live_keys = LIVE_KEYS - DNS_ZONE_KEYS if old.dns_listen else LIVE_KEYS
    live = [name for name in changed if name in live_keys]
    restart = [name for name in changed if name not in live_keys]
    if restart:
        new = replace(new, **{name: getattr(old, name) for name in restart})
    return new, live, restart


def credential_files(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> frozenset[Path]:
    """The files the API client is built from, to rebuild it when they change (blocking)."""
    from nodehosts.adapters.filewatch import kubeconfig_files

    env = os.environ if environ is None else environ
    if settings.kubeconfig is not None:
        return kubeconfig_files(settings.kubeconfig)
    if env.get("KUBERNETES_SERVICE_HOST"):
        from nodehosts.adapters.kube import SERVICE_ACCOUNT_DIR

        # Not the token: the client re-reads a rotated service account token by itself, and a
        # relist every time the kubelet rotates it would be a waste.
        return frozenset({SERVICE_ACCOUNT_DIR / "ca.crt"})
    files: set[Path] = set()
    for item in (env.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep):
        if item:
            files |= kubeconfig_files(Path(os.path.expanduser(item)))
    return frozenset(files)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _config_key(message: str) -> str:
    """The `section.key` (or flag) a ConfigError message starts with."""
    head = message.partition(": ")[0]
    return "file" if head.startswith("config file ") else head


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


class _NoMetrics:
    """Stands in for Metrics without --metrics-listen: every update is a no-op."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return _ignore


class Daemon:
    """Holds the current inputs and the last publication; the tasks do the rest."""

    def __init__(
        self,
        settings: Settings,
        *,
        source_factory: Callable[[Daemon], Any] | None = None,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self._source_factory = source_factory or _node_source
        self._clock = clock
        self._notifier = notifier if notifier is not None else Notifier.from_environ()
        # Re-reads the config file and applies the command line again (blocking); None: the
        # settings never change (no config file to reload).
        self._reload_settings = reload_settings
        self.nodes: Mapping[str, NodeInfo] = {}
        # The label selector `nodes` were LISTed with (not the configured one: after a reload
        # that changes it, they are the old selector's until the new source's first LIST).
        self.nodes_selector: str | None = settings.label_selector
        self._source_selector: str | None = settings.label_selector
        self.static_hosts: list[Host] = []
        self.synced = False
        self.resource_version: str | None = None
        self.last_sync: float | None = None
        self.last_error: dict[str, Any] | None = None
        self.publication: Publication | None = None
        self.generation = 0
        self.ready = asyncio.Event()
        # True while the records served are the saved ones from before this start.
        self.stale = False
        self.saved: SavedState | None = None
        self.metrics: Any = _NoMetrics()
        self._stop = asyncio.Event()
        self._dirty = asyncio.Event()
        # The record set, updated per changed node; what changed feeds the sinks and the logs.
        self._index: RecordIndex | None = None
        self._renderer = HostsRenderer()
        self._decisions_logged = False
        self._hosts_writer = HostsFileWriter(settings.hosts_file) if settings.hosts_file else None
        self._hosts_body: str | None = None
        self._dns: Any = None
        self.source: Any = None
        # The kubelet serving CSR approver (--approve-serving-csrs), fed after every publish.
        self.approver: Any = None
        # What every sink holds now (saved or published), what this run published, and what
        # the state file holds.
        self._served: RecordSet | None = None
        self._published: RecordSet | None = None
        self._saved_records: RecordSet | None = None
        self._saved_at: float | None = None
        self._state_store: StateStore | None = None
        self._metrics_server: Any = None
        self._control: Any = None
        self._watcher: Any = None
        self._credential_paths: frozenset[Path] = frozenset()
        self._reload_lock = asyncio.Lock()
        self._replace_source = asyncio.Event()
        self._restart_reason: str | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._status_sent: str | None = None
        self._stopping = False
        # The name of the internal task whose crash ended the run (run_daemon exits 1), if any.
        self.failed_task: str | None = None

    # --- NodeListener: called on the event loop by the Node source.

    def nodes_synced(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        first = not self.synced
        self.nodes, self.resource_version = nodes, resource_version
        self.nodes_selector = self._source_selector
        self.synced, self.last_sync, self.last_error = True, self._clock(), None
        log.info("nodes_synced", nodes=len(nodes), resource_version=resource_version, first=first)
        self.metrics.synced(self.last_sync)
        if not first:
            self.metrics.watch_restart(self._restart_reason or "relist")
        self._restart_reason = None
        self._dirty.set()

    def nodes_changed(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        self.nodes, self.resource_version = nodes, resource_version
        self.last_sync = self._clock()
        self.metrics.synced(self.last_sync)
        self._dirty.set()

    def source_error(self, reason: str, message: str) -> None:
        self.last_error = {"reason": reason, "message": message, "at": self._clock()}
        self.metrics.api_error(reason)
        self._update_status()

    def source_recovered(self) -> None:
        self.last_error = None
        self.metrics.synced(self._clock())
        self._update_status()

    # --- lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start the sinks, the source and the publisher; return after stop()."""
        settings = self.settings
        self._update_status()
        if settings.metrics_listen is not None:
            from nodehosts.adapters.metrics import Metrics

            self.metrics = Metrics()
        await self._reload_static_hosts(publish=False)
        if self._hosts_writer is not None:
            current = await asyncio.to_thread(self._hosts_writer.current)
            if current is not None:
                self.generation = read_generation(current) or 0
                self._hosts_body = hosts_body(current)
        await self._load_state()
        tasks: list[asyncio.Task[Any]] = []
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop_wait")
        try:
            if settings.dns_listen:
                self._dns = _dns_service(settings)
                try:
                    await self._dns.start()
                except OSError as error:
                    self._dns = None
                    _log_listen_failed(error)
                    raise StartupError(STARTUP_CONFIG_EXIT) from None
                self.metrics.attach_dns(self._dns.stats)
            self._serve_saved_state()
            await self._start_metrics_server()
            await self._start_control()
            await self._start_watcher()
            self._start_notify_tasks()
            tasks = [
                asyncio.create_task(self._run_source(), name="node_source"),
                asyncio.create_task(self._publisher(), name="publisher"),
            ]
            if settings.approve_serving_csrs:
                self.approver = _csr_approver(self)
                tasks.append(asyncio.create_task(self.approver.run(), name="csr_approver"))
            done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_wait:  # a main task never ends by itself: a bug
                    self._task_done(task)
        finally:
            self._stopping = True
            self._notifier.notify(stopping=True, status="stopping")
            everything = [*tasks, stop_wait, *self._background]
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            await self._stop_services()
            log.info("stopped", generation=self.generation)

    async def _stop_services(self) -> None:
        for service in (self._watcher, self._control, self._metrics_server, self._dns):
            if service is None:
                continue
            try:
                await service.stop()
            except Exception:  # stopping one must not keep the others running
                log.exception("stop_failed", service=type(service).__name__)
        self.metrics.attach_dns(None)

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(functools.partial(self._task_done, may_finish=True))

    def _task_done(self, task: asyncio.Task[Any], *, may_finish: bool = False) -> None:
        """Supervision: an internal task that crashed ends the daemon, non-zero, at once.

        Every input is checked by its parser, so a crash is a bug; living on without the task
        (no publisher, no reloads) would look healthy and be wrong. systemd restarts us.
        """
        if task.cancelled():
            return
        error = task.exception()
        if error is None and may_finish:
            return  # a background task that finished its job
        if self.failed_task is None:
            self.failed_task = task.get_name()
            log.error(
                "task_failed",
                task=task.get_name(),
                error=f"{type(error).__name__}: {error}" if error else "ended unexpectedly",
                exc_info=error,
            )
        self.stop()

    # --- the Node source, replaceable (a new label selector needs a new LIST)

    async def _run_source(self) -> None:
        while True:
            self._replace_source.clear()
            self._source_selector = self.settings.label_selector
            self.source = self._source_factory(self)
            run = asyncio.create_task(self.source.run(), name="node_source_run")
            replace_wait = asyncio.create_task(self._replace_source.wait(), name="source_replace")
            try:
                done, _ = await asyncio.wait(
                    {run, replace_wait}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (run, replace_wait):
                    task.cancel()
                await asyncio.gather(run, replace_wait, return_exceptions=True)
            if run in done:
                run.result()  # a source that ends by itself has a bug: let it surface
                return
            self._restart_reason = "label_selector"
            log.info("node_source_replaced", label_selector=self.settings.label_selector)

    def _restart_source(self, reason: str) -> None:
        if self.source is not None:
            self._restart_reason = reason
            self.source.restart()
        if self.approver is not None:
            self.approver.restart()

    # --- publishing

    def request_publish(self) -> None:
        """Inputs other than Nodes changed (static hosts, settings): rebuild soon."""
        self._dirty.set()

    async def _publisher(self) -> None:
        """Publish a change at once when idle; while changes keep coming (a change within the
        window after the last publication's end), wait out the rest of that window and publish
        them together: a burst costs one publication per window, never one per event. The
        window is COALESCE_SECONDS, or after a publication longer than LONG_PUBLICATION_SECONDS
        (20,000 Nodes in a burst) half the time it took, up to MAX_COALESCE_SECONDS: fewer
        long publications overlap the burst (each leaves memory fragmented)."""
        loop = asyncio.get_running_loop()
        published_at = float("-inf")
        took = 0.0
        while True:
            await self._dirty.wait()
            window = COALESCE_SECONDS
            if took > LONG_PUBLICATION_SECONDS:
                window = min(max(COALESCE_SECONDS, took / 2), MAX_COALESCE_SECONDS)
            wait = published_at + window - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            if self.synced:
                started = time.monotonic()
                await self.publish()
                took = time.monotonic() - started
                published_at = loop.time()

    async def publish(self) -> None:
        """Bring the record set up to the current inputs and update every sink that differs.

        The record set is incremental (RecordIndex: only what the changed nodes touch). Above
        OFF_LOOP_NODES its update, the DNS answers and the hosts text are built in worker
        threads (only the publisher touches them), and DNS keeps answering from the previous
        answers meanwhile instead of stalling. Around it: nodehosts.runtime's gc and malloc
        policy for a publication (gc paused while building, what it leaves frozen after).
        """
        from nodehosts import runtime

        with runtime.publication_gc():
            await self._publish()
        await runtime.after_publication()

    async def _publish(self) -> None:
        inputs = (self.nodes, self.static_hosts, self.settings.record_policy)
        # Small clusters build on the loop: a thread hop (GIL hand-over) would cost more than
        # the incremental step it saves the loop from (issue 16's change latency).
        off_loop = len(self.nodes) > OFF_LOOP_NODES
        if off_loop:
            publication, changes = await asyncio.to_thread(self._update_records, *inputs)
        else:
            publication, changes = self._update_records(*inputs)
        self.publication = publication
        records = publication.records
        if self.approver is not None:
            # A CSR is judged against what is published now; a no-op when nothing it uses changed.
            # With the selector the Nodes were listed with: after a reload that clears it, the
            # old selected Nodes are not the whole cluster.
            self.approver.update_nodes(
                self.nodes,
                records,
                label_selector=self.nodes_selector,
                domain=self.settings.record_policy.domain,
                static_hosts=self.static_hosts,
            )
        if records == self._published and self.ready.is_set():
            self._update_status()
            return
        if self._dns is not None:
            if off_loop:
                await self._dns.update_in_thread(records, changes)
            else:
                self._dns.update(records, changes)
        if not await self._write_hosts(records, changes, off_loop=off_loop):
            return
        if self._hosts_writer is None and records != self._served:
            self.generation += 1  # without a hosts file, the generation counts DNS zones
        self._published = self._served = records
        self.metrics.set_generation(self.generation)
        self._wake_watchers()
        if self.stale:
            self.stale, self.saved = False, None
            self.metrics.set_stale(False)
            log.info("saved_records_replaced", hosts=len(records), generation=self.generation)
        if not self.ready.is_set():
            self.ready.set()
            self.metrics.set_ready(True)
            log.info("ready", hosts=len(records), generation=self.generation)
            self._status_sent = self._status_text()
            self._notifier.notify(ready=True, status=self._status_sent)
        else:
            self._update_status()
        await self._save_state(records)

    def _update_records(
        self, nodes: Mapping[str, NodeInfo], static_hosts: list[Host], policy: Any
    ) -> tuple[Publication, HostChanges | None]:
        """The record set brought up to the inputs, its decisions logged and counted (in a
        worker thread above OFF_LOOP_NODES: only the publisher touches the index; the logger
        and the metrics are thread-safe)."""
        if self._index is None:
            self._index = RecordIndex(policy, static_hosts)
        publication = self._index.update(nodes, static_hosts, policy)
        self._log_decisions(publication, self._index.decision_changes())
        self.metrics.observe_publication(publication)
        return publication, self._index.changes()

    async def _write_hosts(
        self, records: RecordSet, changes: HostChanges | None = None, *, off_loop: bool = False
    ) -> bool:
        """Bring the hosts file up to `records`; False if that failed (retried soon)."""
        if self._hosts_writer is None:
            return True
        renderer = self._renderer
        if off_loop:
            body = await asyncio.to_thread(renderer.render, records, changes)
        else:
            body = renderer.render(records, changes)
        if body == self._hosts_body:
            return True
        generation = self.generation + 1
        text = render_file(records, generation=generation, body=body, addresses=renderer.addresses)
        try:
            written = await asyncio.to_thread(self._hosts_writer.write, text)
        except HostsFileError as error:
            log.error("hosts_file_write_failed", error=str(error), retry_in=HOSTS_RETRY_SECONDS)
            self.metrics.hosts_file_write_failed()
            asyncio.get_running_loop().call_later(HOSTS_RETRY_SECONDS, self._dirty.set)
            return False
        self.generation, self._hosts_body = generation, body
        if written:
            self.metrics.hosts_file_written(at=self._clock())
        log.info(
            "hosts_file_written",
            path=str(self.settings.hosts_file),
            generation=generation,
            hosts=len(records),
            addresses=renderer.addresses,
        )
        return True

    def _log_decisions(
        self,
        publication: Publication,
        changed: list[tuple[str, NodeDecision | None, NodeDecision | None]],
    ) -> None:
        """One line per node whose decision changed (`changed`: RecordIndex.decision_changes).

        The first publication logs skipped and noted nodes one by one but the published
        ones as a single count: 5000 `node_published` lines at start help nobody.
        """
        first = not self._decisions_logged and bool(publication.decisions)
        for name, before, decision in changed:
            if decision is None:
                log.info("node_removed", node=name)
                continue
            if not decision.published:
                log.warning("node_skipped", node=name, reason=decision.reason)
            elif decision.reason:
                log.warning("node_published_with_note", node=name, note=decision.reason)
            elif not first and (before is None or before.addresses != decision.addresses):
                log.info(
                    "node_published",
                    node=name,
                    addresses=[str(a) for a in decision.addresses],
                )
        if first:
            self._decisions_logged = True
            log.info(
                "nodes_published",
                published=sum(1 for d in publication.decisions if d.published),
                skipped=sum(1 for d in publication.decisions if not d.published),
            )

    # --- saved state

    async def _load_state(self) -> None:
        directory = self.settings.state_dir
        if directory is None:
            return
        from nodehosts.adapters.state import StateStore

        self._state_store = StateStore(directory)
        saved = await asyncio.to_thread(self._state_store.load)
        if saved is None:
            return
        self.saved, self._saved_records, self._served = saved, saved.records, saved.records
        self._saved_at = saved.saved_at
        self.stale = True
        if self._hosts_writer is None:
            self.generation = saved.generation

    def _serve_saved_state(self) -> None:
        """Until the first sync: DNS answers the saved records; the hosts file stays as it is."""
        saved = self.saved
        if saved is None:
            return
        if self._dns is not None:
            self._dns.update(saved.records)
        self.metrics.set_stale(True)
        self.metrics.set_generation(self.generation)
        log.warning(
            "serving_saved_records",
            hosts=len(saved.records),
            saved_at=_iso(saved.saved_at),
            age_seconds=round(max(0.0, self._clock() - saved.saved_at), 1),
            generation=saved.generation,
            dns=self._dns is not None,
            hosts_file="left as it is" if self._hosts_writer is not None else None,
        )
        self._update_status()

    async def _save_state(self, records: RecordSet) -> None:
        store = self._state_store
        if store is None or records == self._saved_records:
            return
        from nodehosts.adapters.state import SavedState, StateError

        state = SavedState(
            records,
            saved_at=self._clock(),
            generation=self.generation,
            resource_version=self.resource_version,
        )
        try:
            await asyncio.to_thread(store.save, state)
        except StateError as error:
            log.warning("state_save_failed", error=str(error))
            self.metrics.state_save_failed()
            return
        self._saved_records, self._saved_at = records, state.saved_at
        self.metrics.state_saved()
        log.debug("state_saved", path=str(store.path), hosts=len(records))

    # --- systemd

    def _start_notify_tasks(self) -> None:
        interval = watchdog_interval()
        if interval is not None and self._notifier.enabled:
            self._spawn(run_watchdog(self._notifier, interval), "watchdog")
        if self._notifier.enabled:
            self._spawn(self._extend_start_timeout(), "extend_start_timeout")

    async def _extend_start_timeout(self) -> None:
        """Waiting for the API is not a failure: do not let the start timeout end it."""
        usec = int(EXTEND_START_SECONDS * 1_000_000)
        while not self.ready.is_set():
            self._notifier.notify(extend_timeout_usec=usec)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EXTEND_START_SECONDS / 2):  # not wait_for: gh-86296
                    await self.ready.wait()

    def _status_text(self) -> str:
        error = self.last_error
        if not self.ready.is_set():
            if self.stale and self._served is not None and self.saved is not None:
                api = f"API unreachable ({error['reason']})" if error else "waiting for the API"
                return (
                    f"serving saved records, {api}: {len(self._served)} hosts "
                    f"saved {_iso(self.saved.saved_at)}"
                )
            if self.synced:
                return "publishing the first complete list of Nodes"
            if error:
                return f"waiting for the first list of Nodes; API error: {error['reason']}"
            return "waiting for the first list of Nodes"
        publication = self.publication
        decisions = publication.decisions if publication is not None else ()
        published = sum(1 for decision in decisions if decision.published)
        hosts = len(self._served) if self._served is not None else 0
        text = (
            f"{published}/{len(decisions)} nodes published, {hosts} hosts, "
            f"generation {self.generation}, last sync {_iso(self.last_sync)}"
        )
        if error:
            text += f"; API error since {_iso(error['at'])}: {error['reason']}"
        return text

    def _update_status(self) -> None:
        if not self._notifier.enabled or self._stopping:
            return
        text = self._status_text()
        if text != self._status_sent:
            self._status_sent = text
            self._notifier.notify(status=text)

    # --- metrics and health

    def readiness(self) -> Readiness:
        from nodehosts.adapters.metrics import Readiness

        if self.ready.is_set():
            hosts = len(self._served) if self._served is not None else 0
            return Readiness(True, f"{hosts} hosts published, generation {self.generation}")
        error = f" (API error: {self.last_error['reason']})" if self.last_error else ""
        if self.stale:
            return Readiness(False, f"serving saved records until the first sync{error}")
        return Readiness(False, f"waiting for the first complete list of Nodes{error}")

    async def _start_metrics_server(self) -> None:
        listen = self.settings.metrics_listen
        if listen is None:
            return
        from nodehosts.adapters.metrics import MetricsServer

        server = MetricsServer(self.metrics, listen, readiness=self.readiness)
        try:
            await server.start()
        except OSError as error:
            # Observability must not take name resolution down with it.
            log.error("metrics_listen_failed", address=f"{listen[0]}:{listen[1]}", error=str(error))
            return
        self._metrics_server = server

    # --- control socket

    async def _start_control(self) -> None:
        path = self.settings.control_socket
        if path is None:
            return
        from nodehosts.adapters.control import ControlError, ControlServer

        server = ControlServer(path, {"dump": self.dump, "watch": self.watch})
        try:
            await server.start()
        except ControlError as error:
            log.error("control_socket_failed", path=str(path), error=str(error))
            return
        self._control = server

    def dump(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The live state for `nodehosts dump --from daemon` (format "json" or "hosts")."""
        served = self._served if self._served is not None else RecordSet()
        settings = self.settings
        state: dict[str, Any] = {
            "source": "daemon",
            "pid": os.getpid(),
            "ready": self.ready.is_set(),
            "stale": self.stale,
            "synced": self.synced,
            "generation": self.generation,
            "resource_version": self.resource_version,
            "last_sync": _iso(self.last_sync),
            "last_sync_age_seconds": (
                None if self.last_sync is None else round(self._clock() - self.last_sync, 3)
            ),
            "last_error": (
                None
                if self.last_error is None
                else {**self.last_error, "at": _iso(self.last_error["at"])}
            ),
            "state_saved_at": _iso(self._saved_at),
            "config": str(settings.config_path) if settings.config_path else None,
            "policy": settings.view_summary(),
        }
        if self.approver is not None:
            state["csrs"] = self.approver.report()
        if arguments.get("format") == "hosts":
            state["text"] = render_hosts(served)
            return state
        served_report = publication_report(Publication(records=served))
        if self.publication is None:
            report = served_report
        else:
            report = publication_report(self.publication)
            report["hosts"] = served_report["hosts"]
            report["counts"].update(
                hosts=served_report["counts"]["hosts"],
                addresses=served_report["counts"]["addresses"],
            )
        state.update(report)
        return state

    # --- `dump --watch`: a long poll on the control socket

    # Set (and dropped) when the served records change; created by the first waiting `watch`.
    _records_changed: asyncio.Event | None = None

    def _wake_watchers(self) -> None:
        """The served records changed: answer every waiting `watch`."""
        waiting, self._records_changed = self._records_changed, None
        if waiting is not None:
            waiting.set()

    async def watch(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """`dump` in hosts format, once the generation is not `after` any more, or after
        `wait` seconds (at most WATCH_MAX_WAIT) with no change."""
        after = arguments.get("after")
        wait = min(max(float(arguments.get("wait", WATCH_MAX_WAIT)), 0.0), WATCH_MAX_WAIT)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while self.generation == after:
                    if self._records_changed is None:
                        self._records_changed = asyncio.Event()
                    await self._records_changed.wait()
        return self.dump({"format": "hosts"})

    # --- live reloads

    async def _start_watcher(self) -> None:
        try:
            from nodehosts.adapters.filewatch import FileWatcher

            paths = await self._watched_paths()
            watcher = FileWatcher(paths, self._files_changed)
            await watcher.start()
        except Exception as error:  # inotify limits, a missing library: SIGHUP still works
            log.error("file_watcher_start_failed", error=str(error), fallback="SIGHUP")
            return
        self._watcher = watcher

    async def _watched_paths(self) -> frozenset[Path]:
        settings = self.settings
        try:
            credentials = await asyncio.to_thread(credential_files, settings)
        except Exception as error:
            log.warning("credential_files_unknown", error=str(error))
            credentials = frozenset()
        self._credential_paths = frozenset(Path(os.path.abspath(p)) for p in credentials)
        paths = set(self._credential_paths)
        for path in (settings.config_path, settings.static_hosts):
            if path is not None:
                paths.add(Path(os.path.abspath(path)))
        return frozenset(paths)

    async def _refresh_watch(self) -> None:
        paths = await self._watched_paths()
        if self._watcher is not None:
            await self._watcher.set_paths(paths)

    async def _files_changed(self, changed: frozenset[Path]) -> None:
        """The FileWatcher saw some watched files change: re-apply what they feed."""
        async with self._reload_lock:
            before = self.settings
            if before.config_path is not None and _absolute(before.config_path) in changed:
                await self._reload_config(trigger="file")
            static = self.settings.static_hosts
            if (
                static is not None
                and static == before.static_hosts
                and _absolute(static) in changed
            ):
                await self._reload_static_hosts()
            credentials = changed & self._credential_paths
            if credentials:
                await self._reload_credentials(credentials, trigger="file")
            await self._refresh_watch()

    def request_reload(self, trigger: str = "SIGHUP") -> None:
        """Re-read the config, the static hosts and the credentials now (SIGHUP)."""
        log.info("reload_requested", trigger=trigger)
        self._spawn(self.reload(trigger=trigger), "reload")

    async def reload(self, *, trigger: str) -> None:
        async with self._reload_lock:
            await self._reload_config(trigger=trigger)
            await self._reload_static_hosts()
            await self._reload_credentials(frozenset(), trigger=trigger)
            await self._refresh_watch()
        log.info("reload_finished", trigger=trigger)

    async def _reload_config(self, *, trigger: str) -> None:
        loader = self._reload_settings
        if loader is None:
            return
        try:
            new = await asyncio.to_thread(loader)
        except ConfigError as error:
            message = str(error)
            log.error(
                "config_rejected",
                key=_config_key(message),
                error=message,
                trigger=trigger,
                kept="the running configuration",
            )
            self.metrics.reloaded("config", ok=False)
            return
        self.metrics.reloaded("config", ok=True)
        await self.apply_settings(new, trigger=trigger)

    async def apply_settings(self, new: Settings, *, trigger: str = "api") -> None:
        """Swap in `new`, applying what can change live; the rest waits for a restart."""
        old = self.settings
        applied, live, restart = plan_settings_change(old, new)
        if restart:
            log.warning(
                "config_needs_restart",
                keys=[file_key(name) for name in restart],
                trigger=trigger,
                kept="the running values of these keys until a restart",
            )
        self.settings = applied
        log.info("config_reloaded", changed=[file_key(name) for name in live], trigger=trigger)
        if not live:
            return
        if "log_format" in live or "log_level" in live:
            from nodehosts import logs

            logs.configure(applied.log_format, applied.log_level)
        if "static_hosts" in live:
            await self._reload_static_hosts()
        if "label_selector" in live:
            self._replace_source.set()  # a new selector needs a new LIST
        elif "kubeconfig" in live:
            self._restart_source("kubeconfig")
        if RECORD_POLICY_KEYS.intersection(live):
            self.request_publish()

    async def _reload_static_hosts(self, *, publish: bool = True) -> None:
        path = self.settings.static_hosts
        try:
            hosts = await asyncio.to_thread(read_static_hosts, path)
        except (OSError, ValueError) as error:
            log.error(
                "static_hosts_rejected",
                path=str(path),
                error=str(error),
                kept=len(self.static_hosts),
            )
            self.metrics.reloaded("static_hosts", ok=False)
            return
        if publish:
            self.metrics.reloaded("static_hosts", ok=True)
        if hosts == self.static_hosts:
            return
        self.static_hosts = hosts
        if not publish:  # the first read, at start
            return
        log.info("static_hosts_reloaded", path=str(path) if path else None, hosts=len(hosts))
        self.request_publish()

    async def _reload_credentials(self, changed: frozenset[Path], *, trigger: str) -> None:
        """Rebuild the API client from the kubeconfig (or in-cluster files) if they load."""
        from nodehosts.adapters.kube import KubeConfigError, load_client_configuration

        try:
            await asyncio.to_thread(load_client_configuration, self.settings.kubeconfig)
        except KubeConfigError as error:
            log.error(
                "credentials_rejected",
                files=sorted(map(str, changed)),
                error=str(error),
                kept="the running API client",
            )
            self.metrics.reloaded("credentials", ok=False)
            return
        log.info("credentials_reloaded", files=sorted(map(str, changed)), trigger=trigger)
        self.metrics.reloaded("credentials", ok=True)
        self._restart_source("credentials")


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _node_source(daemon: Daemon) -> Any:
    from nodehosts.adapters.kube import NodeSource, Tuning, load_client_configuration

    # The kubeconfig is looked up at every (re)build, so a reloaded path is honoured too.
    return NodeSource(
        lambda: load_client_configuration(daemon.settings.kubeconfig),
        daemon,
        label_selector=daemon.settings.label_selector,
        tuning=Tuning(
            max_page_bytes=daemon.settings.max_page_bytes,
            max_line_bytes=daemon.settings.max_line_bytes,
        ),
    )


def _csr_approver(daemon: Daemon) -> Any:
    from nodehosts.adapters.csr_approver import CsrApprover
    from nodehosts.adapters.kube import load_client_configuration

    return CsrApprover(
        lambda: load_client_configuration(daemon.settings.kubeconfig),
        policy=daemon.settings.csr_policy,
        metrics=daemon.metrics,
    )


def _dns_service(settings: Settings) -> Any:
    from nodehosts.adapters.dns_server import DnsService
    from nodehosts.core.answer import ZoneConfig

    return DnsService(
        listen=settings.dns_listen,
        zone=ZoneConfig(
            domain=settings.domain,
            ttl=settings.ttl,
            negative_ttl=settings.negative_ttl,
            nameserver=settings.dns_nameserver or "",
            hostmaster=settings.dns_hostmaster or "",
        ),
        upstreams=settings.upstreams,
        allow_recursion_from=settings.allow_recursion_from,
    )


STARTUP_CONFIG_EXIT = 2  # like a configuration error: restarting the same config cannot help


class StartupError(Exception):
    """The daemon cannot start with this configuration; already logged, exit with exit_code."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def _log_listen_failed(error: OSError) -> None:
    """One line naming the address and, when it is in use, who holds it (or who usually does)."""
    import errno

    from nodehosts.adapters.portholder import likely_holders, port_holder

    host, port = getattr(error, "host", ""), getattr(error, "port", 0)
    context: dict[str, Any] = {"address": f"{host}:{port}", "error": error.strerror or str(error)}
    if error.errno == errno.EADDRINUSE:
        holder = port_holder(host, port)
        context["holder"] = holder or "unknown"
        if holder is None:
            context["hint"] = likely_holders(port)
    log.error("dns_listen_failed", **context)


async def run_daemon(daemon: Daemon) -> int:
    """Run with SIGTERM/SIGINT wired to a clean stop and SIGHUP to a reload; 0 on a clean stop,
    1 when an internal task crashed (logged as `task_failed`)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, daemon, signum)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload, "SIGHUP")
    try:
        await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return 0 if daemon.failed_task is None else 1


def _on_signal(daemon: Daemon, signum: int) -> None:
    daemon.stop()  # first: nothing below may keep a signal from stopping the daemon
    log.info("signal_received", signal=signal.Signals(signum).name)
