"""Inputs -> one record set -> sinks: the publishing half of the daemon.

Contract: `Publisher` holds the inputs (the Nodes as last listed, the static hosts; the
record policy comes from the settings) and brings the sinks up to them. `run()` publishes a
change at once when idle and coalesces only while changes keep coming; nothing is published
before the first complete LIST (`Status.synced`), nor, while the Nodes are label-selected,
before the first LIST of every Node (`hidden`: the Nodes outside the selection hold their
names; without them a selected node could take one as its alias meanwhile). Every `Sink`
holds the record set published last; a sink whose update fails (the hosts file) makes the
publication incomplete: the status stays as it was and the whole publication is tried again
after HOSTS_RETRY_SECONDS. The state of the world that results is set on the `StatusBoard`
through `nodehosts.core.status`. Saved state (`StateKeeper`): served at start, stale, until
the first sync; saved again after every publication that changed the records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from nodehosts import runtime
from nodehosts.adapters.hostsfile import HostsFileError, HostsFileWriter
from nodehosts.app.statusboard import StatusBoard
from nodehosts.app.telemetry import DaemonMetrics
from nodehosts.core import status as st
from nodehosts.core.hosts import HostsRenderer, parse_hosts, read_generation, render_header
from nodehosts.core.inventory import Snapshot
from nodehosts.core.model import (
    Host,
    HostChanges,
    NodeDecision,
    NodeInfo,
    Publication,
    RecordSet,
)
from nodehosts.core.records import (
    NO_HIDDEN,
    PublicationCounts,
    RecordIndex,
    RecordPolicy,
    publication_counts,
)

if TYPE_CHECKING:
    from nodehosts.adapters.csr_approver import CsrApprover
    from nodehosts.adapters.dns_server import DnsService
    from nodehosts.adapters.state import StateStore
    from nodehosts.config import Settings

log = structlog.get_logger(__name__)

# Bursts (a relist, a rolling kubelet restart) become one rebuild and one write.
COALESCE_SECONDS = 0.05
# ... or, after a publication longer than LONG_PUBLICATION_SECONDS (20,000 Nodes), half the
# time it took, up to MAX_COALESCE_SECONDS. Up to 5000 Nodes the 50 ms stay (issue 3's change
# latency).
LONG_PUBLICATION_SECONDS = 0.3
MAX_COALESCE_SECONDS = 0.5
# Above this many Nodes the records, the DNS answers and the hosts text are built in worker
# threads (DNS answers from the previous cache meanwhile); below, on the loop.
OFF_LOOP_NODES = 8000
# A hosts file that could not be written is tried again after this long.
HOSTS_RETRY_SECONDS = 5.0

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


# --- sinks


class SinkFailed(Exception):
    """A sink could not take the records (already logged); the publication is retried."""


class Sink(Protocol):
    """One place the record set is published to."""

    async def publish(
        self, records: RecordSet, changes: HostChanges | None, *, generation: int, off_loop: bool
    ) -> bool:
        """Hold `records` from now on (labelled `generation` where the sink shows one): True
        if that changed the sink, False if it held them already; SinkFailed if it could not.
        `changes` (RecordIndex.changes) leads from the sink's previous records to `records`;
        `off_loop`: build in a worker thread (a large record set)."""
        ...


class DnsSink:
    """The DNS server's answers (nodehosts.adapters.dns_server)."""

    def __init__(self, service: DnsService) -> None:
        self.service = service

    async def publish(
        self, records: RecordSet, changes: HostChanges | None, *, generation: int, off_loop: bool
    ) -> bool:
        if off_loop:
            return await self.service.update_in_thread(records, changes)
        return self.service.update(records, changes)


class HostsSink:
    """The hosts file; written only when its body changes. Its writes count generations."""

    def __init__(self, path: Path, metrics: DaemonMetrics, clock: Callable[[], float]) -> None:
        self.writer = HostsFileWriter(path)
        self._metrics = metrics
        self._clock = clock
        self._renderer = HostsRenderer()
        self._body: str | None = None  # the file's body now (None: no file)
        self._chunks: tuple[str, ...] | None = None  # the renderer's pieces of `_body`

    async def load(self) -> int | None:
        """Read the file left by an earlier run: the generation its header names, if any."""
        current = await asyncio.to_thread(self.writer.current)
        if current is None:
            return None
        self._body = hosts_body(current)
        return read_generation(current) or 0

    async def publish(
        self, records: RecordSet, changes: HostChanges | None, *, generation: int, off_loop: bool
    ) -> bool:
        renderer = self._renderer
        if off_loop:
            chunks = await asyncio.to_thread(renderer.chunks, records, changes)
        else:
            chunks = renderer.chunks(records, changes)
        if chunks == self._chunks:  # a pointer per block: unchanged blocks are the same str
            return False
        header = render_header(records, generation=generation, addresses=renderer.addresses)
        try:
            # Joined, compared and written in the worker thread: at 5000 hosts the body is
            # ~250 KB, and each copy of it on the loop cost page faults per change.
            written = await asyncio.to_thread(self._write, header, chunks)
        except HostsFileError as error:
            log.error("hosts_file_write_failed", error=str(error), retry_in=HOSTS_RETRY_SECONDS)
            self._metrics.hosts_file_write_failed()
            raise SinkFailed(str(error)) from None
        self._chunks = chunks
        if written is None:
            return False
        if written:
            self._metrics.hosts_file_written(at=self._clock())
        log.info(
            "hosts_file_written",
            path=str(self.writer.path),
            generation=generation,
            hosts=len(records),
            addresses=renderer.addresses,
        )
        return True

    def _write(self, header: str, chunks: tuple[str, ...]) -> bool | None:
        """(worker thread) None when the body is the file's already, else HostsFileWriter.write's
        result. Only the publisher calls it, one publication at a time."""
        body = "".join(chunks)
        if body == self._body:
            return None
        written = self.writer.write(header + body)
        self._body = body
        return written


class StateKeeper:
    """The state file (`state.dir`): the records of an earlier run, and this run's saves."""

    def __init__(
        self, store: StateStore, metrics: DaemonMetrics, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._clock = clock
        self._saved: RecordSet | None = None  # what the file holds

    async def load(self) -> tuple[RecordSet, float, int] | None:
        """(records, saved at, generation) from the file, or None."""
        saved = await asyncio.to_thread(self.store.load)
        if saved is None:
            return None
        self._saved = saved.records
        return saved.records, saved.saved_at, saved.generation

    async def save(
        self, records: RecordSet, *, generation: int, resource_version: str | None
    ) -> float | None:
        """Save `records` unless the file holds them already; when saved, the time."""
        if records == self._saved:
            return None
        from nodehosts.adapters.state import SavedState, StateError

        state = SavedState(
            records,
            saved_at=self._clock(),
            generation=generation,
            resource_version=resource_version,
        )
        try:
            await asyncio.to_thread(self.store.save, state)
        except StateError as error:
            log.warning("state_save_failed", error=str(error))
            self._metrics.state_save_failed()
            return None
        self._saved = records
        self._metrics.state_saved()
        log.debug("state_saved", path=str(self.store.path), hosts=len(records))
        return state.saved_at


# --- the publisher


@dataclass(frozen=True, slots=True)
class Hidden:
    """The Nodes outside the label selection, from the cluster view: `size` of them, their
    name -> Hostname from `names()`. Called in the publication (coalesced, off the loop for a
    large cluster), so a view of whole Nodes is reduced once per publication, not per event;
    `names()` returns the same object while no name changed (RecordIndex then compares
    nothing)."""

    size: int
    names: Callable[[], Mapping[str, str | None]]


class Publisher:
    """The inputs, the incremental record set built from them, and the sinks it feeds."""

    def __init__(
        self,
        board: StatusBoard,
        settings: Callable[[], Settings],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._board = board
        self._settings = settings
        self._clock = clock
        # The Nodes as last listed or watched, and the label selector they were LISTed with
        # (not the configured one: after a reload that changes it, they are the old
        # selector's until the new source's first LIST).
        self._nodes: Mapping[str, NodeInfo] = {}
        # The names that changed between the Nodes the index last saw and `nodes` (None: not
        # known, compare them all): a change then costs the index O(changed Nodes).
        self._changed: set[str] | None = None
        self.nodes_selector: str | None = settings().label_selector
        # The cluster view's Nodes (None: not listed yet, or no view): with `nodes_selector`,
        # those outside it hold their names.
        self.hidden: Hidden | None = None
        self.static_hosts: list[Host] = []
        self.sinks: list[Sink] = []
        self.hosts: HostsSink | None = None  # the sink that counts generations, if any
        self.state: StateKeeper | None = None
        self.approver: CsrApprover | None = None  # fed after every publication
        self._index: RecordIndex | None = None
        self._decisions_logged = False
        self._dirty = asyncio.Event()

    @property
    def nodes(self) -> Mapping[str, NodeInfo]:
        """The Nodes as last listed or watched."""
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: Mapping[str, NodeInfo]) -> None:
        if self._changed is not None:
            # An inventory snapshot knows what changed since the one before it.
            delta = nodes.changed_since(self._nodes) if isinstance(nodes, Snapshot) else None
            if delta is None:
                self._changed = None
            else:
                self._changed.update(delta)
        self._nodes = nodes

    def request(self) -> None:
        """An input changed: publish soon."""
        self._dirty.set()

    async def serve_saved(self, dns: DnsSink | None) -> None:
        """Until the first sync: DNS answers the saved records; the hosts file stays as it is."""
        if self.state is None:
            return
        saved = await self.state.load()
        if saved is None:
            return
        records, saved_at, generation = saved
        board = self._board
        if self.hosts is None:  # without a hosts file, the generation is the state file's
            board.record(st.restored(board.status, generation=generation))
        if dns is not None:
            dns.service.update(records)
        # The host and address gauges count what is served meanwhile (no Node seen yet): a
        # whole count, once; the index keeps the counts from the first sync on.
        board.metrics.observe_counts(publication_counts(Publication(records)))
        log.warning(
            "serving_saved_records",
            hosts=len(records),
            saved_at=st.iso(saved_at),
            age_seconds=round(max(0.0, self._clock() - saved_at), 1),
            generation=generation,
            dns=dns is not None,
            hosts_file="left as it is" if self.hosts is not None else None,
        )
        board.update(st.serving_saved(board.status, records, saved_at=saved_at))

    async def run(self) -> None:
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
            if self.can_publish():
                started = time.monotonic()
                await self.publish()
                took = time.monotonic() - started
                published_at = loop.time()

    def can_publish(self) -> bool:
        """The first complete LIST is in and, with a label selector, so is the view of every
        Node (until then the saved records stay served)."""
        return self._board.status.can_publish

    async def publish(self) -> None:
        """Bring the record set up to the current inputs and update every sink that differs.

        The record set is incremental (RecordIndex: only what the changed nodes touch). Above
        OFF_LOOP_NODES its update, the DNS answers and the hosts text are built in worker
        threads (only the publisher touches them), and DNS keeps answering from the previous
        answers meanwhile instead of stalling. Around it: nodehosts.runtime's gc and malloc
        policy for a publication.
        """
        self._board.emit("publish_started")
        with runtime.publication_gc():
            await self._publish()
        self._board.emit("published")
        await runtime.after_publication()

    async def _publish(self) -> None:
        policy = self._settings().record_policy
        # Snapshotted with the others: an off-loop build sees one consistent set.
        hidden = self.hidden if self.nodes_selector is not None else None
        inputs = (self.nodes, self.static_hosts, policy, hidden)
        # Small clusters build on the loop: a thread hop (GIL hand-over) would cost more than
        # the incremental step it saves the loop from (issue 16's change latency).
        off_loop = max(len(self.nodes), hidden.size if hidden else 0) > OFF_LOOP_NODES
        names, self._changed = self._changed, set()
        try:
            if off_loop:
                publication, changes, counts = await asyncio.to_thread(
                    self._update_records, *inputs, names
                )
            else:
                publication, changes, counts = self._update_records(*inputs, names)
        except BaseException:
            self._changed = None  # the index may hold some of them: compare everything next
            raise
        records = publication.records
        self._board.emit("records_built")
        if self.approver is not None:
            # A CSR is judged against what is published now; a no-op when nothing it uses changed.
            # With the selector the Nodes were listed with: after a reload that clears it, the
            # old selected Nodes are not the whole cluster.
            self.approver.update_nodes(
                self.nodes,
                records,
                label_selector=self.nodes_selector,
                domain=policy.domain,
                static_hosts=self.static_hosts,
            )
        board = self._board
        status = board.status
        if status.ready and records == status.records:
            board.update(st.evaluated(status, publication, counts))
            return
        generation = status.next_generation
        counted: bool | None = None
        try:
            for sink in self.sinks:
                changed = await sink.publish(
                    records, changes, generation=generation, off_loop=off_loop
                )
                if sink is self.hosts:
                    counted = changed
        except SinkFailed:
            # The decisions show in `dump` (why is it not ready?); the records stay as served.
            board.record(st.evaluated(status, publication, counts))
            asyncio.get_running_loop().call_later(HOSTS_RETRY_SECONDS, self._dirty.set)
            return
        board.update(st.published(board.status, publication, counts=counts, sinks_changed=counted))
        if self.state is not None:
            status = board.status
            saved_at = await self.state.save(
                records, generation=status.generation, resource_version=status.resource_version
            )
            if saved_at is not None:
                board.record(st.state_saved(board.status, at=saved_at))

    def _update_records(
        self,
        nodes: Mapping[str, NodeInfo],
        static_hosts: list[Host],
        policy: RecordPolicy,
        hidden: Hidden | None,
        changed: set[str] | None,
    ) -> tuple[Publication, HostChanges | None, PublicationCounts]:
        """The record set brought up to the inputs, its decisions logged and counted (in a
        worker thread above OFF_LOOP_NODES: only the publisher touches the index; the logger
        and the metrics are thread-safe). The counts are the index's, kept per change: metrics
        and the systemd status line show them without walking every node and host."""
        if self._index is None:
            self._index = RecordIndex(policy, static_hosts)
        names = NO_HIDDEN if hidden is None else hidden.names()
        publication = self._index.update(nodes, static_hosts, policy, changed, hidden=names)
        self._log_decisions(publication, self._index.decision_changes())
        counts = self._index.counts()
        self._board.metrics.observe_counts(counts)
        return publication, self._index.changes(), counts

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
