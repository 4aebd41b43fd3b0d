"""The cluster view: every Node, unselected, while the published Nodes are label-selected.

Contract: `ClusterView(daemon, factory).run()` runs until cancelled. With a label selector the
Nodes outside it still hold their names (`build_publication`'s `hidden`), and the CSR
approver's "no other Node has this IP" must see them: one unselected watch serves both, built
by `factory(daemon, generation)` in one of two shapes: every Node parsed whole when the
approver runs (it needs their addresses; the publisher derives `hidden` from them), else names
and Hostnames only (`HostnameSource`). It runs while `settings.label_selector` is set or the
Nodes were listed with one; a selector set by a reload starts it at once, a cleared one stops
it only once the Nodes were listed without it (until then the old selected Nodes are not the
whole cluster). `renew()` (new credentials: maybe another cluster) replaces it with a new one
that lists from nothing. Each start is a new generation: a stopped view's late calls are
ignored. Its state (listed, error) is the daemon's `Status` (`cluster_*` transitions): nothing
selected is published before it has listed. A view whose task ends is a bug: `run()` raises.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from nodehosts.app.publisher import Hidden
from nodehosts.core import status as st
from nodehosts.core.model import NodeInfo
from nodehosts.core.records import NO_HIDDEN, hidden_nodes

if TYPE_CHECKING:
    from kubernetes.client import Configuration

    from nodehosts.app.daemon import Daemon

__all__ = ["ClusterView", "SourceTask", "cluster_source"]

log = structlog.get_logger(__name__)


class SourceTask(Protocol):
    """A list/watch source the daemon runs and restarts (nodehosts.adapters.kube's sources)."""

    async def run(self) -> None: ...
    def restart(self) -> None: ...


class ClusterView:
    """Runs the unselected Node watch while it is wanted and feeds the publisher (one
    `Hidden` input, whichever the shape), the approver (`update_cluster`) and the status."""

    def __init__(
        self,
        daemon: Daemon,
        factory: Callable[[Daemon, int], SourceTask],
        clock: Callable[[], float],
    ) -> None:
        self._daemon = daemon
        self._factory = factory
        self._clock = clock
        self.source: SourceTask | None = None
        self._toggle = asyncio.Event()  # the view may be wanted or not any more
        self._renew = False  # replace the running view with a new one
        self.generation = 0  # of the view running now: a stopped one's calls are stale
        self._names: Mapping[str, str | None] | None = None  # the names shape's last delivery
        self._reduce = _HiddenNames()  # the whole-Node shape's, in the publication

    def toggle(self) -> None:
        """The selector or the Nodes' listing changed: the view may be wanted or not."""
        self._toggle.set()

    def renew(self) -> None:
        """New credentials may reach another cluster: the running view's Nodes are not the
        truth there. A new view lists from nothing, and nothing is published (nor approved)
        from the old one meanwhile, whichever LIST comes first."""
        if self.source is not None:
            self._renew = True
            self._toggle.set()

    def _wanted(self) -> bool:
        daemon = self._daemon
        return (
            daemon.settings.label_selector is not None
            or daemon.publisher.nodes_selector is not None
        )

    async def run(self) -> None:
        run: asyncio.Task[None] | None = None
        daemon = self._daemon
        try:
            while True:
                self._toggle.clear()
                wanted = self._wanted()
                renew, self._renew = self._renew, False
                if run is not None and (renew or not wanted):
                    self.generation += 1
                    run.cancel()
                    await asyncio.gather(run, return_exceptions=True)
                    run, self.source = None, None
                    daemon.board.update(st.cluster_stopped(daemon.status))
                    if daemon.approver is not None:
                        daemon.approver.update_cluster(None)
                    self._set_hidden(None)
                    log.info("cluster_view_stopped", renew=renew)
                if wanted and run is None:
                    self.generation += 1
                    self.source = self._factory(daemon, self.generation)
                    daemon.board.update(st.cluster_started(daemon.status))
                    run = asyncio.create_task(self.source.run(), name="cluster_view_run")
                    log.info("cluster_view_started", approver=daemon.approver is not None)
                toggle = asyncio.create_task(self._toggle.wait(), name="cluster_toggle")
                waiting: set[asyncio.Task[Any]] = {toggle} if run is None else {toggle, run}
                try:
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    toggle.cancel()
                if run is not None and run in done:
                    run.result()  # a source that ends by itself has a bug: let it surface
                    raise RuntimeError("the cluster Node view ended by itself")
        finally:
            if run is not None:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)

    # --- the source's calls (on the event loop), tagged with the generation they came from

    def hostnames(self, generation: int, hostnames: Mapping[str, str | None]) -> None:
        """Every Node's name -> Hostname (the lean view): the same object while unchanged."""
        if generation != self.generation:
            return  # a stopped view's last call
        self._listed()
        if hostnames is not self._names:
            self._names = hostnames
            self._set_hidden(Hidden(len(hostnames), functools.partial(_same, hostnames)))

    def nodes(self, generation: int, nodes: Mapping[str, NodeInfo]) -> None:
        """Every Node whole (the approver's view); the publisher derives `hidden` from it."""
        if generation != self.generation:
            return
        self._listed()
        daemon = self._daemon
        if daemon.approver is not None:
            daemon.approver.update_cluster(nodes)
        self._set_hidden(Hidden(len(nodes), functools.partial(self._reduce, nodes)))

    def failed(self, generation: int, reason: str, message: str) -> None:
        """Its LIST or watch failed (the source logs `api_error` and retries): in the status
        (STATUS=, /readyz, dump's `cluster_view`) until it delivers or recovers."""
        if generation == self.generation:
            board = self._daemon.board
            board.update(st.cluster_failed(board.status, reason, message, at=self._clock()))

    def recovered(self, generation: int) -> None:
        """Its watch works again after failures (a resumed watch does not relist)."""
        board = self._daemon.board
        if generation == self.generation and board.status.cluster_error is not None:
            board.update(st.cluster_recovered(board.status))

    def _listed(self) -> None:
        board = self._daemon.board
        status = board.status
        if not status.cluster_listed or status.cluster_error is not None:
            board.update(st.cluster_listed(status))

    def _set_hidden(self, hidden: Hidden | None) -> None:
        publisher = self._daemon.publisher
        if hidden is None:
            self._names = None
        elif publisher.hidden is None:
            log.info("cluster_view_synced", nodes=hidden.size)
        publisher.hidden = hidden
        publisher.request()


def _same(names: Mapping[str, str | None]) -> Mapping[str, str | None]:
    return names


class _HiddenNames:
    """name -> Hostname from whole Nodes (the approver's shape), reduced once per new view
    object; the previous result is kept while equal (an address change is no name change), so
    RecordIndex gets the same object and compares nothing. 20,000 Nodes: about 20 ms, in the
    publication (coalesced; off the loop when large; only the publisher calls it)."""

    def __init__(self) -> None:
        self._of: Mapping[str, NodeInfo] | None = None
        self._names: Mapping[str, str | None] = NO_HIDDEN

    def __call__(self, cluster: Mapping[str, NodeInfo]) -> Mapping[str, str | None]:
        if cluster is not self._of:
            names = hidden_nodes(cluster.values())
            if names != self._names:
                self._names = names
            self._of = cluster
        return self._names


def cluster_source(daemon: Daemon, generation: int) -> SourceTask:
    """The unselected view of every Node: whole when the approver needs their addresses,
    else names and Hostnames only."""
    from nodehosts.adapters.kube.config import load_client_configuration
    from nodehosts.adapters.kube.nodes import HostnameSource, NodeSource
    from nodehosts.adapters.kube.reflector import Tuning

    view = daemon.cluster_view
    tuning = Tuning(
        max_page_bytes=daemon.settings.max_page_bytes,
        max_line_bytes=daemon.settings.max_line_bytes,
    )

    def configure() -> Configuration:
        # Looked up at every (re)build, so a reloaded kubeconfig path is honoured.
        return load_client_configuration(daemon.settings.kubeconfig)

    if daemon.approver is not None:
        return NodeSource(configure, _WholeNodes(view, generation), tuning=tuning)
    hostnames = functools.partial(view.hostnames, generation)
    return HostnameSource(
        configure,
        on_synced=lambda names, _version: hostnames(names),
        on_changed=lambda names, _version: hostnames(names),
        on_error=functools.partial(view.failed, generation),
        on_recovered=functools.partial(view.recovered, generation),
        tuning=tuning,
    )


class _WholeNodes:
    """The NodeListener of the whole-Node shape (the approver runs)."""

    def __init__(self, view: ClusterView, generation: int) -> None:
        self._view, self._generation = view, generation

    def nodes_synced(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        self._view.nodes(self._generation, nodes)

    def nodes_changed(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        self._view.nodes(self._generation, nodes)

    def source_error(self, reason: str, message: str) -> None:
        self._view.failed(self._generation, reason, message)

    def source_recovered(self) -> None:
        self._view.recovered(self._generation)
