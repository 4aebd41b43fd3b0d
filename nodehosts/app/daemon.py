"""The daemon: a supervisor of named asyncio tasks around one publisher.

Contract: `Daemon(settings).run()` runs until `stop()` (or SIGTERM/SIGINT via `run_daemon`)
and returns. At start it brings up the sinks (the hosts file, the DNS server; a DNS address
that cannot be bound is a StartupError) and serves the saved records, then the optional
services (metrics, control socket, file watcher: one that fails is logged, not fatal), then
runs its tasks: the Node source (replaced when the label selector changes), the cluster view
(every Node, unselected, while a label selector is set or the Nodes were listed with one),
the publisher and the CSR approver, plus background ones (systemd watchdog and start timeout,
reloads). A task that crashes is a bug: it is logged as `task_failed` and the daemon stops, exit 1.

Who holds what:
- `status` (nodehosts.core.status, on a StatusBoard): what is served and why; the board
  passes each new value on to systemd (READY=1, STATUS=), the metrics and `dump --watch`.
- `publisher` (nodehosts.app.publisher): the inputs, the record set, the sinks, saved state.
- `reloader` (nodehosts.app.reloader): config, static hosts and credential reloads.
- The daemon itself: the Node source's listener calls, start-up and shutdown, supervision,
  and the control socket's `dump` / `watch` answers.
- `cluster_view` (nodehosts.app.clusterview): with a label selector, every Node unselected
  (the names outside the selection, the approver's whole cluster); the daemon only starts
  it (a task), tells it when the selector or the listing changed, and renews it on new
  credentials.

Running as a service: READY=1 once the first complete LIST has been published by every
enabled sink; WATCHDOG=1 from the event loop at half WATCHDOG_USEC (an API outage does not
stop it, a wedged loop does); until the first sync, EXTEND_TIMEOUT_USEC keeps systemd's start
timeout from killing a process that is only waiting for the API (a restart would not bring the
API sooner, and meanwhile the saved records and the DNS forwarder keep serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from nodehosts.adapters.sdnotify import Notifier, run_watchdog, watchdog_interval
from nodehosts.app import clusterview
from nodehosts.app.clusterview import ClusterView, SourceTask
from nodehosts.app.publisher import (
    DnsSink,
    HostsSink,
    Publisher,
    StateKeeper,
)
from nodehosts.app.reloader import Reloader
from nodehosts.app.statusboard import Observer, StatusBoard
from nodehosts.app.telemetry import DaemonMetrics, NoMetrics
from nodehosts.config import Settings
from nodehosts.core import status as st
from nodehosts.core.hosts import render_hosts
from nodehosts.core.model import NodeInfo, Publication, RecordSet
from nodehosts.core.report import publication_report
from nodehosts.core.status import Status

if TYPE_CHECKING:
    from nodehosts.adapters.csr_approver import CsrApprover
    from nodehosts.adapters.dns_server import DnsService
    from nodehosts.adapters.metrics import Readiness

__all__ = ["Daemon", "StartupError", "run_daemon"]

log = structlog.get_logger(__name__)

# The longest a `watch` request waits for a change before answering anyway.
WATCH_MAX_WAIT = 60.0
# Until the first sync: ask systemd for this much more start time, again every half of it.
EXTEND_START_SECONDS = 60.0
STARTUP_CONFIG_EXIT = 2  # like a configuration error: restarting the same config cannot help


class StartupError(Exception):
    """The daemon cannot start with this configuration; already logged, exit with exit_code."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


class Service(Protocol):
    async def stop(self) -> None: ...


class Daemon:
    """Supervises the tasks; answers the Node source's calls and the control socket."""

    def __init__(
        self,
        settings: Settings,
        *,
        source_factory: Callable[[Daemon], SourceTask] | None = None,
        cluster_factory: Callable[[Daemon, int], SourceTask] | None = None,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self._source_factory = source_factory or _node_source
        self._clock = clock
        self._notifier = notifier if notifier is not None else Notifier.from_environ()
        self.metrics: DaemonMetrics = NoMetrics()
        if settings.metrics_listen is not None:
            from nodehosts.adapters.metrics import Metrics

            self.metrics = Metrics()
        self.board = StatusBoard(self._notifier, self.metrics)
        self.publisher = Publisher(self.board, lambda: self.settings, clock=clock)
        if settings.hosts_file is not None:
            self.publisher.hosts = HostsSink(settings.hosts_file, self.metrics, clock)
            self.publisher.sinks.append(self.publisher.hosts)
        self.reloader = Reloader(self, self.publisher, self.metrics, reload_settings)
        self.source: SourceTask | None = None
        self.approver: CsrApprover | None = None
        self._services: list[Service] = []  # started, stopped in reverse order
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._replace_source = asyncio.Event()
        self._source_selector = settings.label_selector  # of the source running now
        # Every Node, unselected, while the Nodes are label-selected; the factory builds its
        # source for (daemon, view generation).
        factory = cluster_factory or clusterview.cluster_source  # looked up now: patchable
        self.cluster_view = ClusterView(self, factory, clock)
        self._restart_reason: str | None = None  # why the next LIST happens
        # The name of the internal task whose crash ended the run (run_daemon exits 1), if any.
        self.failed_task: str | None = None

    @property
    def status(self) -> Status:
        return self.board.status

    def observe(self, observer: Observer) -> None:
        """Call `observer(event, status)` as a change goes through (statusboard.EVENTS)."""
        self.board.observe(observer)

    # --- NodeListener: called on the event loop by the Node source.

    def nodes_synced(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        first = not self.status.synced
        self.publisher.nodes = nodes
        self.publisher.nodes_selector = self._source_selector
        now = self._clock()
        selected = self._source_selector is not None
        self.board.record(st.synced(self.status, resource_version, at=now, selected=selected))
        log.info("nodes_synced", nodes=len(nodes), resource_version=resource_version, first=first)
        self.metrics.synced(now)
        if not first:
            self.metrics.watch_restart(self._restart_reason or "relist")
        self._restart_reason = None
        self.cluster_view.toggle()  # listed without a selector now: the view may stop
        self.publisher.request()

    def nodes_changed(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        self.publisher.nodes = nodes
        now = self._clock()
        self.board.record(st.changed(self.status, resource_version, at=now))
        self.metrics.synced(now)
        self.publisher.request()
        self.board.emit("nodes_changed")

    def source_error(self, reason: str, message: str) -> None:
        self.board.update(st.api_failed(self.status, reason, message, at=self._clock()))
        self.metrics.api_error(reason)

    def source_recovered(self) -> None:
        self.metrics.synced(self._clock())
        self.board.update(st.api_recovered(self.status))

    # --- lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start the sinks, the services and the tasks; return after stop()."""
        self.board.update(self.status)  # the first STATUS= line
        await self.reloader.reload_static_hosts(publish=False)
        tasks: list[asyncio.Task[Any]] = []
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop_wait")
        try:
            await self._start_sinks()
            await self._start_services()
            self._start_notify_tasks()
            if self.settings.approve_serving_csrs:  # first: the cluster view feeds it
                self.approver = self.publisher.approver = _csr_approver(self)
            tasks = [
                asyncio.create_task(self._run_node_source(), name="node_source"),
                asyncio.create_task(self.cluster_view.run(), name="cluster_view"),
                asyncio.create_task(self.publisher.run(), name="publisher"),
            ]
            if self.approver is not None:
                tasks.append(asyncio.create_task(self.approver.run(), name="csr_approver"))
            done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_wait:  # a main task never ends by itself: a bug
                    self._task_done(task)
        finally:
            self.board.stopping()
            everything = [*tasks, stop_wait, *self._background]
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            await self._stop_services()
            log.info("stopped", generation=self.status.generation)

    async def _start_sinks(self) -> None:
        """The state file opened, the hosts file read (its generation restored), the DNS server
        started, then the saved records served."""
        settings, publisher = self.settings, self.publisher
        if settings.state_dir is not None:  # only a running daemon saves (not a benchmark's)
            from nodehosts.adapters.state import StateStore

            store = StateStore(settings.state_dir)
            publisher.state = StateKeeper(store, self.metrics, self._clock)
        if publisher.hosts is not None:
            generation = await publisher.hosts.load()
            if generation is not None:
                self.board.record(st.restored(self.status, generation=generation))
        dns: DnsSink | None = None
        if settings.dns_listen:
            service = _dns_service(settings)
            try:
                await service.start()
            except OSError as error:
                _log_listen_failed(error)
                raise StartupError(STARTUP_CONFIG_EXIT) from None
            self._services.append(service)
            self.metrics.attach_dns(service.stats)
            dns = DnsSink(service)
            publisher.sinks.insert(0, dns)  # DNS first: it answers within milliseconds
        await publisher.serve_saved(dns)

    async def _start_services(self) -> None:
        """Metrics, control socket, file watcher: each one that fails is logged, not fatal."""
        settings = self.settings
        if settings.metrics_listen is not None:
            from nodehosts.adapters.metrics import Metrics, MetricsServer

            assert isinstance(self.metrics, Metrics)
            listen = settings.metrics_listen
            metrics = MetricsServer(self.metrics, listen, readiness=self.readiness)
            try:
                await metrics.start()
                self._services.append(metrics)
            except OSError as error:  # observability must not take name resolution down
                address = f"{listen[0]}:{listen[1]}"
                log.error("metrics_listen_failed", address=address, error=str(error))
        if settings.control_socket is not None:
            from nodehosts.adapters.control import ControlError, ControlServer

            control = ControlServer(
                settings.control_socket, {"dump": self.dump, "watch": self.watch}
            )
            try:
                await control.start()
                self._services.append(control)
            except ControlError as error:
                log.error(
                    "control_socket_failed", path=str(settings.control_socket), error=str(error)
                )
        await self.reloader.start()
        self._services.append(self.reloader)

    async def _stop_services(self) -> None:
        for service in reversed(self._services):
            try:
                await service.stop()
            except Exception:  # stopping one must not keep the others running
                log.exception("stop_failed", service=type(service).__name__)
        self._services.clear()
        self.metrics.attach_dns(None)

    # --- supervision

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(functools.partial(self._task_done, may_finish=True))

    def _task_done(self, task: asyncio.Task[Any], *, may_finish: bool = False) -> None:
        """An internal task that crashed ends the daemon, non-zero, at once.

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

    async def _run_node_source(self) -> None:
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

    def replace_node_source(self) -> None:
        self._replace_source.set()
        self.cluster_view.toggle()

    def restart_sources(self, reason: str) -> None:
        self.cluster_view.renew()  # new credentials may reach another cluster
        if self.source is not None:
            self._restart_reason = reason
            self.source.restart()
        if self.approver is not None:
            self.approver.restart()

    # --- reloads and publishing, on request

    def request_reload(self, trigger: str = "SIGHUP") -> None:
        """Re-read the config, the static hosts and the credentials now (SIGHUP)."""
        log.info("reload_requested", trigger=trigger)
        self._spawn(self.reloader.reload(trigger=trigger), "reload")

    async def apply_settings(self, new: Settings, *, trigger: str = "api") -> None:
        await self.reloader.apply_settings(new, trigger=trigger)

    def request_publish(self) -> None:
        """Inputs other than Nodes changed (static hosts, settings): rebuild soon."""
        self.publisher.request()

    # --- systemd

    def _start_notify_tasks(self) -> None:
        if not self._notifier.enabled:
            return
        interval = watchdog_interval()
        if interval is not None:
            self._spawn(run_watchdog(self._notifier, interval), "watchdog")
        self._spawn(self._extend_start_timeout(), "extend_start_timeout")

    async def _extend_start_timeout(self) -> None:
        """Waiting for the API is not a failure: do not let the start timeout end it."""
        usec = int(EXTEND_START_SECONDS * 1_000_000)
        ready = self.board.ready
        while not ready.is_set():
            self._notifier.notify(extend_timeout_usec=usec)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EXTEND_START_SECONDS / 2):  # not wait_for: gh-86296
                    await ready.wait()

    # --- /readyz and the control socket

    def readiness(self) -> Readiness:
        from nodehosts.adapters.metrics import Readiness

        return Readiness(*st.readiness(self.status))

    def dump(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The live state for `nodehosts dump --from daemon` (format "json" or "hosts")."""
        status, settings = self.status, self.settings
        state: dict[str, Any] = {
            "source": "daemon",
            "pid": os.getpid(),
            **st.dump_fields(status, now=self._clock()),
            "config": str(settings.config_path) if settings.config_path else None,
            "policy": settings.view_summary(),
        }
        if self.approver is not None:
            state["csrs"] = self.approver.report()
        served: RecordSet = status.records
        if arguments.get("format") == "hosts":
            state["text"] = render_hosts(served)
            return state
        served_report = publication_report(Publication(records=served))
        if status.publication is None:
            report = served_report
        else:  # the decisions of the last publication, the hosts served (saved ones, stale)
            report = publication_report(status.publication)
            report["hosts"] = served_report["hosts"]
            report["counts"].update(
                hosts=served_report["counts"]["hosts"],
                addresses=served_report["counts"]["addresses"],
            )
        state.update(report)
        return state

    async def watch(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """`dump` in hosts format, once the generation is not `after` any more, or after
        `wait` seconds (at most WATCH_MAX_WAIT) with no change."""
        wait = min(max(float(arguments.get("wait", WATCH_MAX_WAIT)), 0.0), WATCH_MAX_WAIT)
        await self.board.wait_generation_change(arguments.get("after"), wait)
        return self.dump({"format": "hosts"})


def _node_source(daemon: Daemon) -> SourceTask:
    from nodehosts.adapters.kube.config import load_client_configuration
    from nodehosts.adapters.kube.nodes import NodeSource
    from nodehosts.adapters.kube.reflector import Tuning

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


def _csr_approver(daemon: Daemon) -> CsrApprover:
    from nodehosts.adapters.csr_approver import CsrApprover
    from nodehosts.adapters.kube.config import load_client_configuration

    return CsrApprover(
        lambda: load_client_configuration(daemon.settings.kubeconfig),
        policy=daemon.settings.csr_policy,
        metrics=daemon.metrics,
    )  # fed by the daemon's cluster view (update_cluster)


def _dns_service(settings: Settings) -> DnsService:
    from nodehosts.adapters.dns_server import DnsService
    from nodehosts.core.dns.zone import ZoneConfig

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
