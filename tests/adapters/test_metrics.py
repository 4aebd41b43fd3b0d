"""/metrics, /healthz and /readyz over real HTTP on 127.0.0.1, as a scraper and a probe see it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from nodehosts.adapters import dns_server, upstream
from nodehosts.adapters.dns_server import DnsService
from nodehosts.adapters.durations import ANSWER_SECONDS_BUCKETS, Durations
from nodehosts.adapters.metrics import (
    Metrics,
    MetricsServer,
    Readiness,
)
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import Host, NodeInfo
from nodehosts.core.records import RecordPolicy, build_publication
from tests.helpers.dnsmasq import stand_in_upstream


@dataclass
class Response:
    status: int
    body: str
    content_type: str


def fetch(
    url: str, *, method: str = "GET", accept: str | None = None, timeout: float = 5.0
) -> Response:
    request = urllib.request.Request(url, method=method)
    if accept is not None:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(
                response.status, response.read().decode(), response.headers["Content-Type"]
            )
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read().decode(), error.headers["Content-Type"])


@dataclass
class Served:
    metrics: Metrics
    server: MetricsServer
    readiness: list[Readiness]

    def url(self, path: str) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}{path}"

    async def get(self, path: str, **kwargs: object) -> Response:
        return await asyncio.to_thread(fetch, self.url(path), **kwargs)  # type: ignore[arg-type]

    async def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of a scrape, keyed by name and sorted labels."""
        response = await self.get("/metrics")
        assert response.status == 200
        out = {}
        for family in text_string_to_metric_families(response.body):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics = Metrics()
    readiness = [Readiness(False, "waiting for the first sync")]
    server = MetricsServer(metrics, ("127.0.0.1", 0), readiness=lambda: readiness[-1])
    await server.start()
    try:
        yield Served(metrics, server, readiness)
    finally:
        await server.stop()


def node(name: str, *addresses: tuple[str, str], ready: bool | None = True) -> NodeInfo:
    return NodeInfo(name=name, addresses=tuple(addresses), ready=ready, unschedulable=False)


PUBLICATION = build_publication(
    [
        node("worker-0", ("InternalIP", "10.240.0.101"), ("InternalIP", "fd00::101")),
        node("worker-1", ("InternalIP", "10.240.0.102")),
        node("worker-2", ("Hostname", "worker-2")),  # no address: skipped
        node("controller-0", ("InternalIP", "10.240.0.10"), ready=False),
    ],
    [],
    RecordPolicy(exclude_not_ready=True),
)


async def test_healthz_answers_from_the_loop(served: Served) -> None:
    """/healthz is 200 while the event loop runs."""
    response = await served.get("/healthz")
    assert (response.status, response.body) == (200, "ok\n")


async def test_healthz_does_not_answer_while_the_loop_is_wedged(served: Served) -> None:
    """A blocked event loop leaves /healthz unanswered, so a liveness probe times out; the
    same request is answered 200 once the loop runs again. The probe itself ends the wedge, so
    "while wedged" does not depend on timing."""
    host, port = served.server.address
    unwedge = threading.Event()
    outcome: list[object] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                sock.settimeout(0.5)
                try:
                    outcome.append(sock.recv(4096))
                except TimeoutError:
                    outcome.append("timeout")
                unwedge.set()
                sock.settimeout(20)
                answer = b""
                while b"\r\n" not in answer and (chunk := sock.recv(4096)):
                    answer += chunk
                outcome.append(int(answer.split()[1]))
        finally:
            unwedge.set()

    thread_done = asyncio.get_running_loop().run_in_executor(None, probe)
    assert unwedge.wait(30)  # the loop is wedged until the probe has timed out
    await thread_done
    assert outcome == ["timeout", 200]


async def test_readyz_follows_readiness(served: Served) -> None:
    """/readyz is 503 with the reason until ready, then 200."""
    response = await served.get("/readyz")
    assert (response.status, response.body) == (503, "not ready: waiting for the first sync\n")
    served.readiness.append(Readiness(True, "4 nodes, generation 1"))
    response = await served.get("/readyz")
    assert (response.status, response.body) == (200, "ready: 4 nodes, generation 1\n")


async def test_metrics_show_the_publication(served: Served) -> None:
    """Nodes seen/published/skipped and addresses by family match what is published."""
    served.metrics.observe_publication(PUBLICATION)
    served.metrics.set_generation(7)
    samples = await served.samples()
    assert samples[("nodehosts_nodes_seen", ())] == 4
    assert samples[("nodehosts_nodes_published", ())] == 2
    assert samples[("nodehosts_nodes_skipped", (("reason", "no_address"),))] == 1
    assert samples[("nodehosts_nodes_skipped", (("reason", "not_ready"),))] == 1
    assert samples[("nodehosts_records_hosts", ())] == 2
    assert samples[("nodehosts_records_addresses", (("family", "ipv4"),))] == 2
    assert samples[("nodehosts_records_addresses", (("family", "ipv6"),))] == 1
    assert samples[("nodehosts_records_generation", ())] == 7


async def test_a_reason_that_no_longer_applies_disappears(served: Served) -> None:
    """When the skipped node recovers its skip reason is no longer reported."""
    served.metrics.observe_publication(PUBLICATION)
    healed = build_publication(
        [node("worker-0", ("InternalIP", "10.240.0.101"))], [], RecordPolicy()
    )
    served.metrics.observe_publication(healed)
    samples = await served.samples()
    assert not [key for key in samples if key[0] == "nodehosts_nodes_skipped"]
    assert samples[("nodehosts_records_addresses", (("family", "ipv6"),))] == 0


async def test_api_and_sink_events_are_counted(served: Served) -> None:
    """Errors and restarts by reason, hosts file writes with their time, last sync time."""
    metrics = served.metrics
    metrics.api_error("timeout")
    metrics.api_error("timeout")
    metrics.api_error("unauthorized")
    metrics.watch_restart("expired")
    metrics.synced(1_700_000_000.5)
    metrics.hosts_file_written(at=1_700_000_001.0)
    metrics.hosts_file_write_failed()
    metrics.reloaded("static_hosts", ok=True)
    metrics.reloaded("config", ok=False)
    metrics.set_ready(True)
    metrics.set_stale(True)
    metrics.state_saved()
    samples = await served.samples()
    assert samples[("nodehosts_api_errors_total", (("reason", "timeout"),))] == 2
    assert samples[("nodehosts_api_errors_total", (("reason", "unauthorized"),))] == 1
    assert samples[("nodehosts_watch_restarts_total", (("reason", "expired"),))] == 1
    assert samples[("nodehosts_sync_last_success_timestamp_seconds", ())] == 1_700_000_000.5
    assert samples[("nodehosts_hosts_file_writes_total", ())] == 1
    assert samples[("nodehosts_hosts_file_write_errors_total", ())] == 1
    assert samples[("nodehosts_hosts_file_last_write_timestamp_seconds", ())] == 1_700_000_001.0
    assert samples[("nodehosts_reloads_total", (("input", "static_hosts"), ("result", "ok")))] == 1
    assert samples[("nodehosts_reloads_total", (("input", "config"), ("result", "rejected")))] == 1
    assert samples[("nodehosts_ready", ())] == 1
    assert samples[("nodehosts_records_stale", ())] == 1
    assert samples[("nodehosts_state_saves_total", ())] == 1


async def test_csr_counts(served: Served) -> None:
    """Approvals are counted; pending CSRs are reported by reason, replaced on each update."""
    served.metrics.csr_approved()
    served.metrics.set_csr_pending({"node_not_found": 2, "cn_mismatch": 1})
    served.metrics.set_csr_pending({"node_not_found": 1})
    samples = await served.samples()
    assert samples[("nodehosts_csr_approvals_total", ())] == 1
    assert samples[("nodehosts_csr_pending", (("reason", "node_not_found"),))] == 1
    assert ("nodehosts_csr_pending", (("reason", "cn_mismatch"),)) not in samples


@dataclass
class FakeDnsStats:
    """The shape the DNS service keeps: plain dicts of ints."""

    queries: dict[tuple[str | int, str | int], int] = field(default_factory=dict)
    forwarder_errors: dict[str, int] = field(default_factory=dict)
    answer_seconds: dict[str, Durations] = field(default_factory=dict)


async def test_dns_counters_are_read_at_scrape_time(served: Served) -> None:
    """Counts incremented by the DNS service after attaching show up in the next scrape."""
    stats = FakeDnsStats()
    served.metrics.attach_dns(stats)
    stats.queries[("A", "NOERROR")] = 5
    stats.queries[(28, 3)] = 2  # numeric AAAA / NXDOMAIN
    stats.queries[("TYPE65280", "NOERROR")] = 1
    stats.queries[(999, "NOERROR")] = 1
    stats.forwarder_errors["timeout"] = 3
    samples = await served.samples()
    assert samples[("nodehosts_dns_queries_total", (("qtype", "A"), ("rcode", "NOERROR")))] == 5
    assert samples[("nodehosts_dns_queries_total", (("qtype", "AAAA"), ("rcode", "NXDOMAIN")))] == 2
    # Whatever a client invents is one label value, not a new series each.
    assert samples[("nodehosts_dns_queries_total", (("qtype", "other"), ("rcode", "NOERROR")))] == 2
    assert samples[("nodehosts_dns_forwarder_errors_total", (("reason", "timeout"),))] == 3
    stats.queries[("A", "NOERROR")] += 1
    samples = await served.samples()
    assert samples[("nodehosts_dns_queries_total", (("qtype", "A"), ("rcode", "NOERROR")))] == 6


async def test_dns_counters_of_the_real_dns_service(served: Served) -> None:
    """The DNS service's own stats object (wire numbers, optional extras) is read as it is."""
    upstream_stats = upstream.UpstreamStats()
    stats = dns_server.DnsStats(upstream_stats)
    served.metrics.attach_dns(stats)
    stats.answers.count(28, 0)  # AAAA NOERROR
    stats.answers.count(12, 3)  # PTR NXDOMAIN
    upstream_stats.error("timeout")
    stats.udp_queries += 2
    stats.tcp_timeouts += 1
    samples = await served.samples()
    assert samples[("nodehosts_dns_queries_total", (("qtype", "AAAA"), ("rcode", "NOERROR")))] == 1
    assert samples[("nodehosts_dns_queries_total", (("qtype", "PTR"), ("rcode", "NXDOMAIN")))] == 1
    assert samples[("nodehosts_dns_forwarder_errors_total", (("reason", "timeout"),))] == 1
    assert samples[("nodehosts_dns_received_total", (("transport", "udp"),))] == 2
    assert samples[("nodehosts_dns_received_total", (("transport", "tcp"),))] == 0
    assert samples[("nodehosts_dns_tcp_timeouts_total", ())] == 1


async def test_dns_families_exist_without_a_dns_service(served: Served) -> None:
    """In hosts-file-only mode the DNS metrics are declared but empty."""
    response = await served.get("/metrics")
    assert "# TYPE nodehosts_dns_queries_total counter" in response.body
    assert "nodehosts_dns_queries_total{" not in response.body
    assert "# TYPE nodehosts_dns_answer_seconds histogram" in response.body
    assert "nodehosts_dns_answer_seconds_bucket{" not in response.body


def bucket(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], source: str, le: str
) -> float:
    return samples[("nodehosts_dns_answer_seconds_bucket", (("le", le), ("source", source)))]


async def test_dns_answer_times_are_a_cumulative_histogram(served: Served) -> None:
    """Durations land in the first bucket whose bound they do not exceed (`le`), a batch at
    its mean; the buckets read cumulative, with the sum and the count of answers."""
    local, upstream_times = Durations(), Durations()
    stats = FakeDnsStats(answer_seconds={"local": local, "upstream": upstream_times})
    served.metrics.attach_dns(stats)
    local.observe(0.0001)  # on a bound: that bucket
    local.observe(0.0004, 4)  # 4 answers read at one wakeup, 0.1 ms each
    local.observe(0.00002)
    upstream_times.observe(3.0)  # above every bound
    samples = await served.samples()
    assert [bucket(samples, "local", le) for le in ("1e-05", "5e-05", "0.0001", "2.5", "+Inf")] == [
        0, 1, 6, 6, 6
    ]  # fmt: skip
    assert samples[("nodehosts_dns_answer_seconds_count", (("source", "local"),))] == 6
    assert samples[("nodehosts_dns_answer_seconds_sum", (("source", "local"),))] == pytest.approx(
        0.00052
    )
    assert bucket(samples, "upstream", "2.5") == 0
    assert bucket(samples, "upstream", "+Inf") == 1
    assert len(ANSWER_SECONDS_BUCKETS) + 1 == len(
        [key for key in samples if key[0].endswith("_bucket") and ("source", "local") in key[1]]
    )


async def test_answer_times_of_the_real_dns_service(served: Served, tmp_path: Path) -> None:
    """Every query the DNS service reads, over UDP and TCP, is one local answer time (as many
    as nodehosts_dns_received counts); a forwarded query is one upstream answer time too, and
    one that waited out a silent first upstream took at least that upstream's timeout."""
    timeout = 0.3
    with (
        stand_in_upstream(tmp_path) as forwarder,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole,
    ):
        hole.bind(("127.0.0.1", 0))
        service = DnsService(
            listen=[("127.0.0.1", 0)], zone=ZoneConfig(), upstream_timeout=timeout,
            upstreams=[hole.getsockname(), ("127.0.0.1", forwarder.port)],
        )  # fmt: skip
        service.update(PUBLICATION.records)
        await service.start()
        try:
            served.metrics.attach_dns(service.stats)
            port = service.addresses[0][1]

            def ask(name: str, *, tcp: bool = False) -> list[str]:
                query = dns.message.make_query(name, "A")
                exchange = dns.query.tcp if tcp else dns.query.udp
                reply = exchange(query, "127.0.0.1", port=port, timeout=30)
                return [item.to_text() for rrset in reply.answer for item in rrset]

            for _ in range(3):
                assert await asyncio.to_thread(ask, "worker-0.node.internal") == ["10.240.0.101"]
            assert await asyncio.to_thread(ask, "worker-1", tcp=True) == ["10.240.0.102"]
            assert await asyncio.to_thread(ask, "upstream.example") == ["192.0.2.7"]
            samples = await served.samples()
        finally:
            await service.stop()
    count = {
        source: samples[("nodehosts_dns_answer_seconds_count", (("source", source),))]
        for source in ("local", "upstream")
    }
    received = sum(
        samples[("nodehosts_dns_received_total", (("transport", t),))] for t in ("udp", "tcp")
    )
    assert count == {"local": 5, "upstream": 1}
    assert received == 5
    assert samples[("nodehosts_dns_answer_seconds_sum", (("source", "upstream"),))] >= timeout
    assert bucket(samples, "upstream", "0.1") == 0
    assert bucket(samples, "upstream", "+Inf") == 1
    assert samples[("nodehosts_dns_answer_seconds_sum", (("source", "local"),))] > 0


async def test_openmetrics_when_asked(served: Served) -> None:
    """A scraper asking for OpenMetrics gets it."""
    response = await served.get("/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert response.status == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.body.endswith("# EOF\n")


OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.mark.parametrize("accept", ["", OPENMETRICS], ids=["text", "openmetrics"])
async def test_no_created_series_and_every_other_series_stays(served: Served, accept: str) -> None:
    """prometheus_client adds a `<name>_created` sample to every counter, histogram and
    summary child (in the text format a gauge family of its own per counter): none is scraped,
    in either format, and every other sample is, with its value: counters' `_total`, a
    histogram's buckets, sum and count, gauges, the pulled DNS counters."""
    metrics = served.metrics
    metrics.observe_publication(PUBLICATION)
    metrics.api_error("timeout")
    metrics.watch_restart("expired")
    metrics.csr_approved()
    metrics.reloaded("config", ok=True)
    stats = dns_server.DnsStats(upstream.UpstreamStats())
    stats.answers.count(1, 0)
    stats.udp_queries += 1
    metrics.attach_dns(stats)
    # Any histogram registered on the daemon's registry (none of the library's own kind yet).
    histogram = Histogram(
        "nodehosts_test_seconds", "A test histogram.", ["kind"], buckets=(0.001, 0.01),
        registry=metrics.registry,
    )  # fmt: skip
    histogram.labels("a").observe(0.005)
    histogram.labels("b").observe(0.5)

    response = await served.get("/metrics", accept=accept)
    assert response.status == 200
    assert "_created" not in response.body
    parse = openmetrics_families if accept else text_string_to_metric_families
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in parse(response.body)
        for sample in family.samples
    }
    # What the library's own registry would expose, less the `_created` samples.
    unfiltered = {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in CollectorRegistry.collect(metrics.registry)
        for sample in family.samples
    }
    created = {key for key in unfiltered if key[0].endswith("_created")}
    assert {key[0] for key in created} >= {
        "nodehosts_api_errors_created", "nodehosts_hosts_file_writes_created",
        "nodehosts_test_seconds_created",
    }  # fmt: skip
    assert scraped == unfiltered - created
    assert ("nodehosts_api_errors_total", (("reason", "timeout"),), 1.0) in scraped
    assert ("nodehosts_test_seconds_bucket", (("kind", "a"), ("le", "0.01")), 1.0) in scraped
    assert ("nodehosts_test_seconds_bucket", (("kind", "b"), ("le", "+Inf")), 1.0) in scraped
    assert ("nodehosts_test_seconds_count", (("kind", "b"),), 1.0) in scraped


async def test_unknown_paths_and_methods(served: Served) -> None:
    """404 for unknown paths, 405 for methods other than GET and HEAD; HEAD has no body."""
    assert (await served.get("/nope")).status == 404
    assert (await served.get("/metrics", method="POST")).status == 405
    head = await served.get("/healthz", method="HEAD")
    assert (head.status, head.body) == (200, "")


async def test_a_silent_client_does_not_block_others(served: Served) -> None:
    """A connection that sends nothing does not hold up other requests."""
    host, port = served.server.address
    _reader, writer = await asyncio.open_connection(host, port)
    try:
        assert (await served.get("/healthz")).status == 200
    finally:
        writer.close()


async def test_slow_clients_beyond_the_cap_wait_and_are_served_in_turn(served: Served) -> None:
    """Issue 12: 1100 slow clients each held a file descriptor for 10 s and exhausted the
    process's 1024 (DNS over TCP, forwarding and hosts file writes failed meanwhile). Now at
    most MAX_CONNECTIONS are held at once; the others wait in the listen backlog, silent ones
    are dropped after HEADER_TIMEOUT, and a health check behind them is still answered."""
    host, port = served.server.address
    count = MetricsServer.MAX_CONNECTIONS + 40
    clients = [await asyncio.open_connection(host, port) for _ in range(count)]
    try:
        for _reader, writer in clients:  # a partial request, then silence
            writer.write(b"GET /metrics HTTP/1.1\r\n")
        await asyncio.sleep(0.5)
        assert served.server.connection_count == MetricsServer.MAX_CONNECTIONS
        response = await served.get("/healthz", timeout=4 * MetricsServer.HEADER_TIMEOUT + 10)
        assert response.status == 200

        async def dropped(reader: asyncio.StreamReader) -> bool:
            try:
                async with asyncio.timeout(MetricsServer.HEADER_TIMEOUT + 10):
                    return await reader.read() == b""
            except ConnectionResetError:  # closed with our request unread: also dropped
                return True
            except TimeoutError:
                return False

        results = await asyncio.gather(*(dropped(reader) for reader, _ in clients))
        assert all(results), f"{results.count(False)} of {count} slow clients still held"
        assert served.server.connection_count <= MetricsServer.MAX_CONNECTIONS
    finally:
        for _reader, writer in clients:
            writer.close()


async def test_request_headers_have_a_short_deadline_of_their_own(served: Served) -> None:
    """A client trickling its headers is dropped after HEADER_TIMEOUT in all, not allowed
    10 s per connection; the whole exchange still has REQUEST_TIMEOUT."""
    assert MetricsServer.HEADER_TIMEOUT <= 5 < MetricsServer.REQUEST_TIMEOUT
    host, port = served.server.address
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        async with asyncio.timeout(MetricsServer.REQUEST_TIMEOUT + 5):
            while not reader.at_eof():
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X: y\r\n")  # one header line every 0.5 s, never the end
                await asyncio.sleep(0.5)
                with contextlib.suppress(TimeoutError, ConnectionError):
                    async with asyncio.timeout(0.01):
                        await reader.read(1)
        assert loop.time() - started < MetricsServer.REQUEST_TIMEOUT
    finally:
        writer.close()


async def test_two_daemons_in_one_process_have_separate_metrics() -> None:
    """Each Metrics has its own registry: no duplicate-registration error, no shared values."""
    first, second = Metrics(), Metrics()
    first.api_error("timeout")
    body_first, _ = first.exposition()
    body_second, _ = second.exposition()
    assert b'nodehosts_api_errors_total{reason="timeout"} 1.0' in body_first
    assert b"nodehosts_api_errors_total{" not in body_second


def test_every_metric_is_named_by_the_convention() -> None:
    """nodehosts_<area>_<what>, counters ending in _total."""
    metrics = Metrics()
    for family in metrics.registry.collect():
        assert family.name.startswith("nodehosts_"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name


async def test_every_skip_reason_is_its_own_label(served: Served) -> None:
    """Each cause of a skip is counted under its label (a refused name used to fall into
    `other`, as the label was guessed from the reason's wording)."""
    nodes = [
        node("Bad_Name", ("InternalIP", "10.240.0.1")),
        node("api.cluster.local", ("InternalIP", "10.240.0.2")),
        node("worker-0", ("Hostname", "worker-0")),
        node("worker-1", ("InternalIP", "10.240.0.4"), ready=False),
        NodeInfo("worker-2", (("InternalIP", "10.240.0.5"),), True, True),
        node("lb-0.node.internal", ("InternalIP", "10.240.0.6")),
    ]
    static = [Host(("lb-0",), (ipaddress.ip_address("10.240.0.40"),), "static")]
    policy = RecordPolicy(exclude_not_ready=True, exclude_unschedulable=True)
    served.metrics.observe_publication(build_publication(nodes, static, policy))
    samples = await served.samples()
    skipped = {
        dict(k[1])["reason"]: v for k, v in samples.items() if k[0] == "nodehosts_nodes_skipped"
    }
    assert skipped == {
        "invalid_name": 1,
        "refused_name": 1,
        "no_address": 1,
        "not_ready": 1,
        "unschedulable": 1,
        "name_collision": 1,
    }
