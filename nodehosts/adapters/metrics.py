"""Every nodehosts metric, and the HTTP endpoint serving /metrics, /healthz and /readyz.

Contract:

- All metrics are defined here, in `Metrics`, on a registry of its own (never the process-wide
  default one), so several daemons can live in one process (tests) and nothing a library
  registers globally leaks into our exposition. Names are ``nodehosts_<area>_<what>`` in base
  units, counters end in ``_total``. No ``*_created`` series: the registry leaves them out of
  every scrape (`_Registry`). The daemon never touches prometheus objects: it calls the
  update methods (`observe_counts`, `api_error`, `hosts_file_written`, ...), whose label
  values come from small fixed vocabularies.
- DNS counters are pulled, not pushed: `attach_dns(stats)` hands over an object satisfying
  `DnsStats` (plain dicts of ints the DNS hot path increments), and its values are read at
  scrape time. Unknown query types and rcodes are folded into ``other`` so a client cannot
  grow the label set. Answer times likewise: the DNS service counts them into `Durations`
  (bucket counts and a sum), read as the ``nodehosts_dns_answer_seconds`` histogram.
- `MetricsServer` is a small asyncio HTTP/1.1 server (one request per connection): it answers
  on the event loop, so ``GET /healthz`` answering at all means the loop is alive; ``GET
  /readyz`` is 200 when the `readiness` callback says ready (first sync published by every
  sink) and 503 otherwise, with the reason in the body; ``GET /metrics`` is the Prometheus text
  format (OpenMetrics when the scraper asks for it). Scrapes run on the loop too, so the pulled
  DNS counters are read without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from nodehosts import __version__
from nodehosts.adapters.durations import ANSWER_SECONDS_BUCKETS, Durations
from nodehosts.core.dns.wire import QTYPE_NAMES, RCODE_NAMES
from nodehosts.core.model import Publication
from nodehosts.core.records import PublicationCounts, publication_counts

__all__ = [
    "ANSWER_SECONDS_BUCKETS",
    "DNS_QTYPES",
    "DNS_RCODES",
    "DnsStats",
    "Durations",
    "Metrics",
    "MetricsServer",
    "Readiness",
]

log = structlog.get_logger(__name__)

# Label values kept as they are; anything else is counted as "other".
DNS_QTYPES = frozenset(QTYPE_NAMES.values())
DNS_RCODES = frozenset(RCODE_NAMES.values())
_QTYPE_NUMBERS = QTYPE_NAMES
_RCODE_NUMBERS = RCODE_NAMES


class DnsStats(Protocol):
    """What the DNS service counts (nodehosts.adapters.dns_server.DnsStats has this shape).

    Plain ints, so its hot path stays a dict increment. Optional extra int attributes, read
    when present: udp_queries, tcp_queries, tcp_timeouts, tcp_evicted, zone_updates; and
    answer_seconds, a mapping of source (local, upstream) -> `Durations`.
    """

    @property
    def queries(self) -> Mapping[tuple[Any, Any], int]:
        """(qtype, rcode) -> replies sent; names ("AAAA", "NXDOMAIN") or wire numbers."""
        ...

    @property
    def forwarder_errors(self) -> Mapping[str, int]:
        """Reason -> failed forwards (timeout, unreachable, ...), a small fixed set."""
        ...


_BUCKET_LABELS = (*(repr(bound) for bound in ANSWER_SECONDS_BUCKETS), "+Inf")  # as `le` values


# Optional DnsStats int attributes -> (metric name, help, label values).
_DNS_EXTRA: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("udp_queries", "nodehosts_dns_received", "DNS messages received, by transport.", ("udp",)),
    ("tcp_queries", "nodehosts_dns_received", "DNS messages received, by transport.", ("tcp",)),
    ("tcp_timeouts", "nodehosts_dns_tcp_timeouts", "TCP connections closed as idle.", ()),
    ("tcp_evicted", "nodehosts_dns_tcp_evictions", "TCP connections closed for newer ones.", ()),
    ("zone_updates", "nodehosts_dns_zone_updates", "Times the served zone was replaced.", ()),
)


def _label(value: str | int, numbers: Mapping[int, str], known: frozenset[str]) -> str:
    name = numbers.get(value, "other") if isinstance(value, int) else str(value).upper()
    return name if name in known else "other"


class _DnsCollector(Collector):  # an ABC in prometheus_client 0.16, a Protocol later
    """Reads the attached DnsStats at scrape time."""

    def __init__(self) -> None:
        self.stats: DnsStats | None = None

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.stats)

    @staticmethod
    def _families(stats: DnsStats | None = None) -> Iterator[Metric]:
        queries = CounterMetricFamily(
            "nodehosts_dns_queries",
            "DNS queries answered, by query type and response code.",
            labels=["qtype", "rcode"],
        )
        errors = CounterMetricFamily(
            "nodehosts_dns_forwarder_errors",
            "Queries the upstream forwarder failed to answer, by reason.",
            labels=["reason"],
        )
        answer_seconds = HistogramMetricFamily(
            "nodehosts_dns_answer_seconds",
            "Time from reading a DNS query to sending its answer or handing it to the forwarder"
            " (source=local; UDP and TCP queries read at one wakeup share their mean), and from"
            " the hand-over to sending the upstream's answer (source=upstream).",
            labels=["source"],
        )
        extras: dict[str, CounterMetricFamily] = {}
        for _, name, documentation, values in _DNS_EXTRA:
            if name not in extras:
                labels = ["transport"] if values else []
                extras[name] = CounterMetricFamily(name, documentation, labels=labels)
        if stats is not None:
            folded: dict[tuple[str, str], int] = {}
            for (qtype, rcode), count in list(stats.queries.items()):
                key = (
                    _label(qtype, _QTYPE_NUMBERS, DNS_QTYPES),
                    _label(rcode, _RCODE_NUMBERS, DNS_RCODES),
                )
                folded[key] = folded.get(key, 0) + count
            for (qtype, rcode), count in sorted(folded.items()):
                queries.add_metric([qtype, rcode], count)
            for reason, count in sorted(stats.forwarder_errors.items()):
                errors.add_metric([str(reason)], count)
            for attribute, name, _, values in _DNS_EXTRA:
                value = getattr(stats, attribute, None)
                if isinstance(value, int):
                    extras[name].add_metric(list(values), value)
            by_source: Mapping[str, Durations] = getattr(stats, "answer_seconds", {})
            for source, durations in sorted(by_source.items()):
                cumulative, buckets = 0, []
                for bound, count in zip(_BUCKET_LABELS, durations.counts, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                answer_seconds.add_metric([source], buckets, durations.total)
        yield queries
        yield errors
        yield answer_seconds
        yield from extras.values()


# Family types whose children prometheus_client gives a `<name>_created` sample.
_WITH_CREATED = frozenset({"counter", "histogram", "summary"})


class _Registry(CollectorRegistry):
    """A registry whose scrapes leave out the ``<name>_created`` samples.

    prometheus_client gives every counter, histogram and summary child a `_created` sample (its
    creation time): one more series per labelled child that no query of ours uses, and in the
    classic text format each shows up as a gauge family of its own. The library's switches do
    not fit every supported version: `disable_created_metrics()` came in 0.18 (bookworm has
    0.16), and PROMETHEUS_DISABLE_CREATED_SERIES is read once, when prometheus_client is first
    imported, for the whole process. Filtering our own registry's output works the same on all
    of them and touches no other registry. Every exposition format reads `collect()`.
    """

    def collect(self) -> Iterator[Metric]:
        for family in super().collect():
            if family.type in _WITH_CREATED:
                created = family.name + "_created"
                samples = [s for s in family.samples if s.name != created]
                if len(samples) != len(family.samples):
                    trimmed = copy.copy(family)  # the collector's object stays as it was
                    trimmed.samples = samples
                    yield trimmed
                    continue
            yield family


class Metrics:
    """The daemon's metrics on a private registry, with one update method per event."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry = _Registry(auto_describe=True)
        r = self.registry
        info = Gauge(
            "nodehosts_build_info", "Always 1; the running version.", ["version"], registry=r
        )
        info.labels(__version__).set(1)
        self._ready = Gauge(
            "nodehosts_ready",
            "1 once the first complete sync has been published by every enabled sink.",
            registry=r,
        )
        self._stale = Gauge(
            "nodehosts_records_stale",
            "1 while the records served are the saved ones from before a restart, not the API's.",
            registry=r,
        )
        # What the API shows and what the record policy made of it.
        self._nodes_seen = Gauge(
            "nodehosts_nodes_seen", "Nodes in the last view of the API.", registry=r
        )
        self._nodes_published = Gauge(
            "nodehosts_nodes_published", "Nodes published under at least one name.", registry=r
        )
        self._nodes_skipped = Gauge(
            "nodehosts_nodes_skipped",
            "Nodes not published, by first reason.",
            ["reason"],
            registry=r,
        )
        self._hosts = Gauge(
            "nodehosts_records_hosts", "Published hosts, nodes and static ones.", registry=r
        )
        self._addresses = Gauge(
            "nodehosts_records_addresses",
            "Published addresses (A and AAAA records per name), by family.",
            ["family"],
            registry=r,
        )
        self._collisions = Gauge(
            "nodehosts_records_collisions", "Names claimed by more than one host.", registry=r
        )
        self._generation = Gauge(
            "nodehosts_records_generation", "Generation of the published record set.", registry=r
        )
        for family in ("ipv4", "ipv6"):
            self._addresses.labels(family)
        # The API connection.
        self._last_sync = Gauge(
            "nodehosts_sync_last_success_timestamp_seconds",
            "Unix time the Node view was last confirmed current by the API (list or watch).",
            registry=r,
        )
        self._watch_restarts = Counter(
            "nodehosts_watch_restarts_total",
            "Node watches restarted, by reason.",
            ["reason"],
            registry=r,
        )
        self._api_errors = Counter(
            "nodehosts_api_errors_total", "Failed API requests, by reason.", ["reason"], registry=r
        )
        # Sinks and state.
        self._hosts_writes = Counter(
            "nodehosts_hosts_file_writes_total", "Times the hosts file was replaced.", registry=r
        )
        self._hosts_write_errors = Counter(
            "nodehosts_hosts_file_write_errors_total",
            "Failed attempts to replace the hosts file.",
            registry=r,
        )
        self._hosts_last_write = Gauge(
            "nodehosts_hosts_file_last_write_timestamp_seconds",
            "Unix time the hosts file was last replaced.",
            registry=r,
        )
        self._state_saves = Counter(
            "nodehosts_state_saves_total", "Times the published records were saved.", registry=r
        )
        self._state_save_errors = Counter(
            "nodehosts_state_save_errors_total",
            "Failed saves of the published records.",
            registry=r,
        )
        self._reloads = Counter(
            "nodehosts_reloads_total",
            "Re-reads of changed inputs (config, static_hosts, credentials), by result.",
            ["input", "result"],
            registry=r,
        )
        # Kubelet serving CSRs.
        self._csr_approvals = Counter(
            "nodehosts_csr_approvals_total", "Kubelet serving CSRs approved.", registry=r
        )
        self._csr_approval_failures = Counter(
            "nodehosts_csr_approval_failures_total",
            "Approvals the API refused or that failed (retried with backoff), by reason.",
            ["reason"],
            registry=r,
        )
        self._csr_pending = Gauge(
            "nodehosts_csr_pending",
            "Kubelet serving CSRs left pending, by the rule they fail.",
            ["reason"],
            registry=r,
        )
        self._dns = _DnsCollector()
        r.register(self._dns)

    # --- what the daemon publishes

    def observe_counts(self, counts: PublicationCounts) -> None:
        """Node, host and address counts of the record set now published (the publisher's
        `RecordIndex.counts()`, kept per change: no walk of every node and host)."""
        self._nodes_seen.set(counts.nodes)
        self._nodes_published.set(counts.published)
        # A SkipReason's value is its label.
        self._set_by_label(self._nodes_skipped, {str(k): v for k, v in counts.skipped.items()})
        self._hosts.set(counts.hosts)
        self._addresses.labels("ipv4").set(counts.ipv4)
        self._addresses.labels("ipv6").set(counts.ipv6)
        self._collisions.set(counts.collisions)

    def observe_publication(self, publication: Publication) -> None:
        """`observe_counts` of a publication not kept by a `RecordIndex` (a full build): its
        counts by walking every decision and host."""
        self.observe_counts(publication_counts(publication))

    def set_generation(self, generation: int) -> None:
        self._generation.set(generation)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def set_stale(self, stale: bool) -> None:
        self._stale.set(1 if stale else 0)

    # --- the API

    def synced(self, at: float) -> None:
        """The Node view was confirmed current at Unix time `at`."""
        self._last_sync.set(at)

    def api_error(self, reason: str) -> None:
        self._api_errors.labels(reason).inc()

    def watch_restart(self, reason: str) -> None:
        self._watch_restarts.labels(reason).inc()

    # --- sinks, state and reloads

    def hosts_file_written(self, *, at: float) -> None:
        self._hosts_writes.inc()
        self._hosts_last_write.set(at)

    def hosts_file_write_failed(self) -> None:
        self._hosts_write_errors.inc()

    def state_saved(self) -> None:
        self._state_saves.inc()

    def state_save_failed(self) -> None:
        self._state_save_errors.inc()

    def reloaded(self, input_name: str, *, ok: bool) -> None:
        """`input_name` is config, static_hosts or credentials; a rejected one is not ok."""
        self._reloads.labels(input_name, "ok" if ok else "rejected").inc()

    # --- kubelet serving CSRs

    def csr_approved(self) -> None:
        self._csr_approvals.inc()

    def csr_approval_failed(self, reason: str) -> None:
        """`reason`: KubeApiError's fixed word (unauthorized, forbidden, unreachable, ...)."""
        self._csr_approval_failures.labels(reason=reason).inc()

    def set_csr_pending(self, by_reason: Mapping[str, int]) -> None:
        """The CSRs pending now, by reason (replaces the previous counts)."""
        self._set_by_label(self._csr_pending, by_reason)

    # --- DNS (pulled)

    def attach_dns(self, stats: DnsStats | None) -> None:
        """Read DNS counters from `stats` at every scrape (None: stop reading)."""
        self._dns.stats = stats

    # --- exposition

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type, in the format the `Accept` header asks for."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    @staticmethod
    def _set_by_label(gauge: Gauge, values: Mapping[str, int]) -> None:
        # Clear first: a reason that no longer applies must drop to absent, not stay stale.
        gauge.clear()
        for label, value in sorted(values.items()):
            gauge.labels(label).set(value)


class Readiness(NamedTuple):
    ready: bool
    detail: str


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"} | {
    503: "Service Unavailable"
}
_INDEX = b"nodehosts: /metrics /healthz /readyz\n"
_TEXT = "text/plain; charset=utf-8"


class MetricsServer:
    """HTTP on `listen` for /metrics, /healthz and /readyz, served from the event loop."""

    # A scraper that has not sent its whole request head by then is dropped, and the whole
    # exchange (a slow reader of /metrics) is bounded too: no client holds a connection long.
    HEADER_TIMEOUT = 3.0
    REQUEST_TIMEOUT = 10.0
    MAX_HEADER_LINES = 100
    # Connections held at once. Each is a file descriptor, and the process's descriptors are
    # shared with DNS over TCP, the forwarder, the API and the hosts file (LimitNOFILE in the
    # unit). At the cap nothing more is accepted: further clients wait in the kernel's listen
    # backlog until a slot frees (a scrape takes milliseconds, a silent client HEADER_TIMEOUT),
    # so a flood of slow clients costs a bounded number of descriptors and almost no CPU.
    MAX_CONNECTIONS = 64
    BACKLOG = 128

    def __init__(
        self,
        metrics: Metrics,
        listen: tuple[str, int],
        *,
        readiness: Callable[[], Readiness],
    ) -> None:
        self._metrics = metrics
        self._listen = listen
        self._readiness = readiness
        self._sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(self.MAX_CONNECTIONS)
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): port 0 in `listen` becomes the port the kernel picked."""
        if self._sock is None:
            raise RuntimeError("server not started")
        sockname = self._sock.getsockname()
        return sockname[0], sockname[1]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        host, port = self._listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=self.BACKLOG)
        sock.setblocking(False)
        self._sock = sock
        self._acceptor = asyncio.create_task(self._accept_loop(sock), name="metrics_accept")
        bound_host, bound_port = self.address
        log.info("metrics_listening", address=bound_host, port=bound_port)

    async def stop(self) -> None:
        if self._sock is None:
            return
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.cancel()
            await asyncio.gather(acceptor, return_exceptions=True)
        self._sock.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        self._sock = None

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as error:  # EMFILE, ECONNABORTED: not the end of the server
                self._slots.release()
                log.warning("metrics_accept_failed", error=str(error))
                await asyncio.sleep(0.1)
                continue
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._connection(conn))
            self._connections.add(task)

    async def _connection(self, conn: socket.socket) -> None:
        task = asyncio.current_task()
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=conn)
            except BaseException as error:
                conn.close()
                if isinstance(error, OSError):
                    return
                raise
            await self._accept(reader, writer)
        finally:
            if task is not None:
                self._connections.discard(task)
            self._slots.release()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.REQUEST_TIMEOUT):  # not wait_for: gh-86296
                await self._serve(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client's problem; nothing to answer to
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.HEADER_TIMEOUT):
            request_line = (await reader.readline()).decode("latin-1").strip()
            if not request_line:
                return
            headers: dict[str, str] = {}
            for _ in range(self.MAX_HEADER_LINES):
                line = (await reader.readline()).decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._respond(writer, 400, b"bad request\n", _TEXT)
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            await self._respond(writer, 405, b"only GET and HEAD\n", _TEXT, allow="GET, HEAD")
            return
        status, body, content_type = self._route(target.split("?", 1)[0], headers)
        await self._respond(writer, status, body, content_type, head=method == "HEAD")

    def _route(self, path: str, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        if path == "/metrics":
            body, content_type = self._metrics.exposition(headers.get("accept", ""))
            return 200, body, content_type
        if path == "/healthz":
            return 200, b"ok\n", _TEXT
        if path == "/readyz":
            ready, detail = self._readiness()
            if ready:
                return 200, f"ready: {detail}\n".encode(), _TEXT
            return 503, f"not ready: {detail}\n".encode(), _TEXT
        if path == "/":
            return 200, _INDEX, _TEXT
        return 404, b"not found\n", _TEXT

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        *,
        head: bool = False,
        allow: str | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        if allow is not None:
            lines.append(f"Allow: {allow}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head:
            writer.write(body)
        await writer.drain()
