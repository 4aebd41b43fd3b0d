"""The daemon: sources -> one pure record set -> sinks, as named asyncio tasks.

Contract: `Daemon(settings).run()` runs until `stop()` (or SIGTERM/SIGINT via `run_daemon`)
and returns. Nothing is published before the first complete LIST; after that every change
of the inputs (Nodes, static hosts) is coalesced for a moment, the record set is rebuilt
from scratch, and the sinks are touched only when the record set differs from the last one.
When the API is unreachable the last published records simply stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from nodehosts.adapters.hostsfile import HostsFileWriter
from nodehosts.config import Settings
from nodehosts.core.hosts import parse_hosts, read_generation, render_file, render_hosts
from nodehosts.core.model import Host, NodeDecision, NodeInfo, Publication, RecordSet
from nodehosts.core.records import build_publication

log = structlog.get_logger(__name__)

# Bursts (a relist, a rolling kubelet restart) become one rebuild and one write.
COALESCE_SECONDS = 0.05


def read_static_hosts(path: Path | None) -> list[Host]:
    """The operator's extra hosts; problems are logged per line, never fatal."""
    if path is None:
        return []
    text = path.read_text(encoding="utf-8")
    hosts, warnings = parse_hosts(text)
    for warning in warnings:
        log.warning("static_hosts_line_skipped", path=str(path), problem=warning)
    return hosts


def hosts_body(text: str) -> str:
    """A rendered file without its header comment (body lines never start with '#')."""
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines) and lines[index].startswith("#"):
        index += 1
    return "".join(lines[index:])


class Daemon:
    """Holds the current inputs and the last publication; the tasks do the rest."""

    def __init__(
        self,
        settings: Settings,
        *,
        source_factory: Callable[[Daemon], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._source_factory = source_factory or _node_source
        self._clock = clock
        self.nodes: Mapping[str, NodeInfo] = {}
        self.static_hosts: list[Host] = []
        self.synced = False
        self.resource_version: str | None = None
        self.last_sync: float | None = None
        self.last_error: dict[str, Any] | None = None
        self.publication: Publication | None = None
        self.generation = 0
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._dirty = asyncio.Event()
        self._decisions: dict[str, NodeDecision] = {}
        self._hosts_writer = HostsFileWriter(settings.hosts_file) if settings.hosts_file else None
        self._hosts_body: str | None = None
        self._dns: Any = None
        self.source: Any = None

    # --- NodeListener: called on the event loop by the Node source.

    def nodes_synced(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        first = not self.synced
        self.nodes, self.resource_version = nodes, resource_version
        self.synced, self.last_sync, self.last_error = True, self._clock(), None
        log.info("nodes_synced", nodes=len(nodes), resource_version=resource_version, first=first)
        self._dirty.set()

    def nodes_changed(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        self.nodes, self.resource_version = nodes, resource_version
        self.last_sync = self._clock()
        self._dirty.set()

    def source_error(self, reason: str, message: str) -> None:
        self.last_error = {"reason": reason, "message": message, "at": self._clock()}

    # --- lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start the sinks, the source and the publisher; return after stop()."""
        self.static_hosts = read_static_hosts(self.settings.static_hosts)
        if self._hosts_writer is not None:
            current = await asyncio.to_thread(self._hosts_writer.current)
            if current is not None:
                self.generation = read_generation(current) or 0
                self._hosts_body = hosts_body(current)
        if self.settings.dns_listen:
            self._dns = _dns_service(self.settings)
            await self._dns.start()
        self.source = self._source_factory(self)
        tasks = [
            asyncio.create_task(self.source.run(), name="node_source"),
            asyncio.create_task(self._publisher(), name="publisher"),
        ]
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop_wait")
        try:
            done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_wait and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [*tasks, stop_wait]:
                task.cancel()
            await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
            if self._dns is not None:
                await self._dns.stop()
            log.info("stopped", generation=self.generation)

    # --- publishing

    def request_publish(self) -> None:
        """Inputs other than Nodes changed (static hosts, settings): rebuild soon."""
        self._dirty.set()

    async def _publisher(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty.clear()
            if self.synced:
                await self.publish()

    async def publish(self) -> None:
        """Rebuild the record set from the current inputs and update every sink that differs."""
        publication = build_publication(
            self.nodes.values(), self.static_hosts, self.settings.record_policy
        )
        self._log_decisions(publication)
        previous = self.publication
        self.publication = publication
        if previous is not None and previous.records == publication.records and self.ready.is_set():
            return
        await self._write_hosts(publication.records)
        if self._dns is not None:
            self._dns.update(publication.records)
        if not self.ready.is_set():
            self.ready.set()
            log.info("ready", hosts=len(publication.records), generation=self.generation)

    async def _write_hosts(self, records: RecordSet) -> None:
        if self._hosts_writer is None:
            return
        body = render_hosts(records)
        if body == self._hosts_body:
            return
        generation = self.generation + 1
        text = render_file(records, generation=generation)
        await asyncio.to_thread(self._hosts_writer.write, text)
        self.generation, self._hosts_body = generation, body
        log.info(
            "hosts_file_written",
            path=str(self.settings.hosts_file),
            generation=generation,
            hosts=len(records),
            addresses=records.address_count(),
        )

    def _log_decisions(self, publication: Publication) -> None:
        """One line per node whose decision changed, not per rebuild."""
        decisions = {decision.node: decision for decision in publication.decisions}
        for name, decision in decisions.items():
            before = self._decisions.get(name)
            if before == decision:
                continue
            if not decision.published:
                log.warning("node_skipped", node=name, reason=decision.reason)
            elif decision.reason:
                log.warning("node_published_with_note", node=name, note=decision.reason)
            elif before is None or before.addresses != decision.addresses:
                log.info(
                    "node_published",
                    node=name,
                    addresses=[str(a) for a in decision.addresses],
                )
        for name in self._decisions.keys() - decisions.keys():
            log.info("node_removed", node=name)
        self._decisions = decisions


def _node_source(daemon: Daemon) -> Any:
    from nodehosts.adapters.kube import NodeSource, load_client_configuration

    settings = daemon.settings
    return NodeSource(
        lambda: load_client_configuration(settings.kubeconfig),
        daemon,
        label_selector=settings.label_selector,
    )


def _dns_service(settings: Settings) -> Any:
    from nodehosts.adapters.dns_server import DnsService
    from nodehosts.core.answer import ZoneConfig

    return DnsService(
        listen=settings.dns_listen,
        zone=ZoneConfig(
            domain=settings.domain, ttl=settings.ttl, negative_ttl=settings.negative_ttl
        ),
        upstreams=settings.upstreams,
        allow_recursion_from=settings.allow_recursion_from,
    )


async def run_daemon(daemon: Daemon) -> int:
    """Run with SIGTERM/SIGINT wired to a clean stop; exit code 0 on a clean stop."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, daemon, signum)
    try:
        await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return 0


def _on_signal(daemon: Daemon, signum: int) -> None:
    log.info("signal_received", signal=signal.Signals(signum).name)
    daemon.stop()
