"""DnsService on a real loopback port, asked by the real dig and by dnspython over UDP and TCP.

The service runs on its own event loop in a background thread (`Served`), so that tests can
block on dig, dnspython and raw sockets the way a real client does. Forwarding goes to a real
dnsmasq on another loopback port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodehosts import runtime as eventloop
from nodehosts.adapters.dns_server import DnsService
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import Host, RecordSet
from tests.helpers import dig
from tests.helpers.dnsmasq import Dnsmasq, stand_in_upstream
from tests.helpers.net import refusing_port
from tests.helpers.polling import wait_until
from tests.helpers.records import node_host

T = TypeVar("T")
ip = ipaddress.ip_address
LOCAL = "127.0.0.1"


def records(*hosts: Host) -> RecordSet:
    return RecordSet(tuple(sorted(hosts, key=lambda h: h.canonical)))


RECORDS = records(
    node_host("worker-0", "10.240.0.101"),
    node_host("worker-1", "10.240.0.102", "fd00:10:240::102"),
    node_host("huge", *(f"10.240.2.{i}" for i in range(1, 101))),  # 1600 bytes of A records
    Host(names=("lb-0.node.internal", "lb-0"), addresses=(ip("10.240.0.40"),), origin="static"),
)


class Served:
    """A DnsService running on its own loop in a thread; `port` is its UDP and TCP port."""

    def __init__(
        self,
        records: RecordSet | None = RECORDS,
        *,
        listen: Sequence[tuple[str, int]] = ((LOCAL, 0),),
        zone: ZoneConfig | None = None,
        loop: str = "asyncio",
        **options: Any,
    ) -> None:
        self._records = records
        self._use_uvloop = loop == "uvloop"
        self._kwargs = {"listen": listen, "zone": zone or ZoneConfig(), **options}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dns-service", daemon=True)
        self.service: DnsService

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("DnsService did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "DnsService did not stop within 10 s"

    def _run(self) -> None:
        eventloop.run(self._main(), use_uvloop=self._use_uvloop)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.service = DnsService(**self._kwargs)
            if self._records is not None:
                self.service.update(self._records)
            await self.service.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.service.stop()

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the service's loop and return its result."""
        assert self._loop is not None

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    @property
    def port(self) -> int:
        return self.service.addresses[0][1]

    def query(self, name: str, qtype: str = "A", **how: Unpack[dig.QueryOptions]) -> dig.Response:
        return dig.query(LOCAL, self.port, name, qtype, **how)

    def dig(self, name: str, qtype: str = "A", **how: Unpack[dig.QueryOptions]) -> list[str]:
        return dig.dig(LOCAL, self.port, name, qtype, **how)


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """One service per event loop for the read-only tests of this module."""
    with Served(loop=request.param) as running:
        assert running.call(eventloop.loop_name) == request.param
        yield running


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    """dnsmasq serving names that are not ours: upstream.example and 100 A for big.example."""
    with stand_in_upstream(tmp_path_factory.mktemp("upstream-hosts")) as server:
        yield server


def udp_exchange(port: int, wire: bytes, *, source: str = LOCAL, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(wire, (LOCAL, port))
        return sock.recv(65535)


def tcp_connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOCAL, port), timeout=5)
    return sock


def tcp_read_message(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    size = struct.unpack(">H", exactly(2))[0]
    return exactly(size)


def closed_by_peer(sock: socket.socket, *, within: float) -> bool:
    """True if the server closes `sock` (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# --- answers from the zone, over both transports


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dig_gets_a_node_address_authoritatively(served: Served, tcp: bool) -> None:
    """dig worker-0.node.internal: 10.240.0.101 with aa, over UDP and over TCP."""
    response = served.query("worker-0.node.internal", tcp=tcp)
    assert response.status == "NOERROR"
    assert "aa" in response.flags
    assert response.data() == ["10.240.0.101"]
    assert response.answer[0].ttl == 30


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dnspython_gets_a_and_aaaa(served: Served, tcp: bool) -> None:
    """dnspython's own client, both families of worker-1."""
    send = dns.query.tcp if tcp else dns.query.udp
    for rdtype, expected in (("A", "10.240.0.102"), ("AAAA", "fd00:10:240::102")):
        reply = send(
            dns.message.make_query("worker-1.node.internal", rdtype),
            LOCAL,
            port=served.port,
            timeout=2,
        )
        assert [rd.to_text() for rrset in reply.answer for rd in rrset] == [expected]


def test_bare_node_names_are_answered(served: Served) -> None:
    """dig worker-0 (no search list): the node's address, as a resolver without domain needs."""
    assert served.dig("worker-0") == ["10.240.0.101"]
    assert served.dig("lb-0") == ["10.240.0.40"]


def test_unknown_names_are_nxdomain_with_the_soa(served: Served) -> None:
    """dig nope.node.internal: NXDOMAIN, aa, the zone's SOA with TTL 5 in authority."""
    response = served.query("nope.node.internal")
    assert response.status == "NXDOMAIN"
    assert "aa" in response.flags
    (soa,) = response.authority
    assert (soa.name, soa.rtype, soa.ttl) == ("node.internal.", "SOA", 5)


def test_other_types_on_a_node_name_are_nodata_with_the_soa(served: Served) -> None:
    """dig MX worker-0.node.internal: NOERROR, no answer, SOA in authority."""
    response = served.query("worker-0.node.internal", "MX")
    assert (response.status, response.answer) == ("NOERROR", ())
    assert [r.rtype for r in response.authority] == ["SOA"]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_mixed_case_questions_are_matched_and_echoed_byte_for_byte(
    served: Served, tcp: bool
) -> None:
    """0x20: wOrKeR-0.NODE.internal is answered and its question comes back as sent."""
    wire = dns.message.make_query("wOrKeR-0.NODE.internal", "A", use_edns=0).to_wire()
    if tcp:
        with tcp_connect(served.port) as sock:
            sock.sendall(struct.pack(">H", len(wire)) + wire)
            reply = tcp_read_message(sock)
    else:
        reply = udp_exchange(served.port, wire)
    question = wire[12 : wire.index(b"\x00", 12) + 5]
    assert reply[12 : 12 + len(question)] == question
    message = dns.message.from_wire(reply)
    assert [rd.to_text() for rrset in message.answer for rd in rrset] == ["10.240.0.101"]


def test_edns_queries_get_an_opt_record(served: Served) -> None:
    """dig (EDNS by default, with a cookie) sees udp 1232 back; +noedns sees no OPT."""
    assert served.query("worker-0").edns_udp_size == 1232
    assert served.query("worker-0", options=["+noedns"]).edns_udp_size is None


def test_large_answers_are_truncated_over_udp_and_whole_over_tcp(served: Served) -> None:
    """huge has 100 addresses: UDP says tc (dig +ignore), TCP carries all, plain dig retries."""
    truncated = served.query("huge", options=["+ignore"])
    assert "tc" in truncated.flags
    assert truncated.answer == ()
    assert len(served.dig("huge", tcp=True)) == 100
    assert len(served.dig("huge")) == 100  # dig itself retries over TCP on TC


def test_any_gets_a_minimal_answer(served: Served) -> None:
    """dig ANY worker-1: one RRset (the A), not everything (RFC 8482)."""
    response = served.query("worker-1.node.internal", "ANY")
    assert {r.rtype for r in response.answer} == {"A"}


@pytest.mark.parametrize("opcode", ["1", "2", "4", "5", "6", "15"])
def test_unknown_opcodes_get_notimp(served: Served, opcode: str) -> None:
    """dig +opcode=N for everything but QUERY: NOTIMP."""
    response = served.query("worker-0.node.internal", options=[f"+opcode={opcode}"])
    assert response.status == "NOTIMP"


def test_ptr_of_a_node_address_is_exactly_its_canonical_name(served: Served) -> None:
    """dig -x 10.240.0.101: exactly one PTR, worker-0.node.internal."""
    response = served.query(dig.reverse_name("10.240.0.101"), "PTR")
    assert "aa" in response.flags
    assert response.data() == ["worker-0.node.internal."]
    assert served.dig(dig.reverse_name("fd00:10:240::102"), "PTR") == ["worker-1.node.internal."]


def test_the_apex_answers_soa_and_ns(served: Served) -> None:
    """SOA and NS at node.internal, authoritative; the NS name resolves to where we listen."""
    soa = served.query("node.internal", "SOA")
    assert "aa" in soa.flags
    assert soa.data()[0].startswith("ns.node.internal. hostmaster.node.internal. ")
    ns = served.query("node.internal", "NS")
    assert ns.data() == ["ns.node.internal."]
    # The nameserver resolves: to the address the service listens on, also as glue.
    assert [(r.name, r.data) for r in ns.additional] == [("ns.node.internal.", LOCAL)]
    assert served.dig("ns.node.internal") == [LOCAL]


def test_without_upstreams_other_names_are_refused_without_ra(served: Served) -> None:
    """No upstream configured: example.com is REFUSED and RA is never set."""
    response = served.query("example.com")
    assert response.status == "REFUSED"
    assert "ra" not in response.flags
    assert "ra" not in served.query("worker-0").flags


def test_many_queries_pipelined_on_one_tcp_connection_are_all_answered(served: Served) -> None:
    """Three queries in one write on one connection: three replies, IDs matching."""
    queries = [dns.message.make_query(n, "A") for n in ("worker-0", "worker-1", "lb-0")]
    with tcp_connect(served.port) as sock:
        sock.sendall(
            b"".join(struct.pack(">H", len(w)) + w for w in (q.to_wire() for q in queries))
        )
        replies = [dns.message.from_wire(tcp_read_message(sock)) for _ in queries]
    assert sorted(r.id for r in replies) == sorted(q.id for q in queries)


# --- updates


def test_an_update_is_answered_at_once_and_moves_the_serial_only_on_change() -> None:
    """worker-2 appears on update; the SOA serial grows then, and not for equal records."""
    clock = iter(range(1_790_000_000, 1_790_000_100))
    with Served(RECORDS, clock=lambda: float(next(clock))) as running:
        serial = int(running.query("node.internal", "SOA").data()[0].split()[2])
        assert running.query("worker-2.node.internal").status == "NXDOMAIN"
        changed = records(*RECORDS.hosts, node_host("worker-2", "10.240.0.103"))
        assert running.call(lambda: running.service.update(changed)) is True
        assert running.dig("worker-2.node.internal") == ["10.240.0.103"]
        new_serial = int(running.query("node.internal", "SOA").data()[0].split()[2])
        assert new_serial > serial
        same = records(*changed.hosts)
        assert running.call(lambda: running.service.update(same)) is False
        assert int(running.query("node.internal", "SOA").data()[0].split()[2]) == new_serial


def test_before_the_first_update_zone_names_get_servfail() -> None:
    """Not loaded yet: SERVFAIL (retry later), never an NXDOMAIN that resolvers would cache."""
    with Served(None) as running:
        assert running.query("worker-0.node.internal").status == "SERVFAIL"


def test_every_listen_address_serves_udp_and_tcp() -> None:
    """127.0.0.1 and ::1, port 0 each: both answer on UDP and TCP on their reported port."""
    with Served(listen=[(LOCAL, 0), ("::1", 0)]) as running:
        for host, port in running.service.addresses:
            assert dig.dig(host, port, "worker-0") == ["10.240.0.101"]
            assert dig.dig(host, port, "worker-0", tcp=True) == ["10.240.0.101"]


def test_after_stop_the_port_no_longer_answers() -> None:
    """stop() closes UDP and TCP: dig gets no answer, TCP connects are refused."""
    with Served() as running:
        port = running.port
    with pytest.raises(dig.DigError):
        dig.query(LOCAL, port, "worker-0", timeout=1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOCAL, port), timeout=2).close()


# --- TCP clients that stall


def test_a_stalled_tcp_client_is_dropped_while_others_are_served() -> None:
    """A client that sends half a length prefix is cut off after tcp_timeout, not before;
    dig still works meanwhile."""
    with Served(tcp_timeout=0.5) as running:
        with tcp_connect(running.port) as stalled:
            stalled.sendall(b"\x00")
            started = time.monotonic()
            assert running.dig("worker-0", tcp=True) == ["10.240.0.101"]
            assert running.dig("worker-0") == ["10.240.0.101"]
            assert closed_by_peer(stalled, within=20.0)
            assert time.monotonic() - started >= 0.4, "cut off before tcp_timeout"
        assert running.call(lambda: running.service.stats.tcp_timeouts) == 1


def test_stalled_connections_cannot_lock_out_new_clients() -> None:
    """At max_tcp_connections the quietest connection makes room: new clients get answers."""
    with Served(tcp_timeout=30, max_tcp_connections=4) as running:
        idle = [tcp_connect(running.port) for _ in range(6)]
        try:
            wait_until(
                lambda: running.call(lambda: running.service.stats.tcp_connections),
                until=lambda n: n == 6,
                what="six TCP connections accepted",
            )
            assert running.dig("worker-0", tcp=True) == ["10.240.0.101"]
            assert closed_by_peer(idle[0], within=2.0)
            assert running.call(lambda: running.service.stats.tcp_evicted) >= 3
        finally:
            for sock in idle:
                sock.close()


# --- forwarding


def test_other_names_are_forwarded_to_the_upstream_for_allowed_clients(upstream: Dnsmasq) -> None:
    """upstream.example via us: dnsmasq's answer, with ra; reverse lookups too."""
    with Served(upstreams=[(LOCAL, upstream.port)]) as running:
        response = running.query("upstream.example")
        assert response.data() == ["192.0.2.7"]
        assert "ra" in response.flags
        assert "ra" in running.query("worker-0").flags
        assert running.dig(dig.reverse_name("192.0.2.7"), "PTR") == ["upstream.example."]
        # Ours stay ours: MX on a node name is NODATA from us, not dnsmasq's REFUSED.
        assert running.query("worker-0", "MX").status == "NOERROR"


def test_clients_outside_the_allowed_networks_are_refused(upstream: Dnsmasq) -> None:
    """allow 127.0.0.1/32; a client at 127.0.0.2 gets REFUSED (no ra) but still our records."""
    with Served(
        upstreams=[(LOCAL, upstream.port)], allow_recursion_from=["127.0.0.1/32"]
    ) as running:
        outside = running.query("upstream.example", options=["-b", "127.0.0.2"])
        assert outside.status == "REFUSED"
        assert "ra" not in outside.flags
        ours = running.query("worker-0", options=["-b", "127.0.0.2"])
        assert ours.data() == ["10.240.0.101"]
        assert "ra" not in ours.flags
        assert running.dig("upstream.example") == ["192.0.2.7"]
        tcp_outside = running.query("upstream.example", tcp=True, options=["-b", "127.0.0.2"])
        assert tcp_outside.status == "REFUSED"


def test_a_dead_first_upstream_fails_over_to_the_next(upstream: Dnsmasq) -> None:
    """First upstream: a port nobody listens on. Answers still come, from dnsmasq."""
    with (
        refusing_port(LOCAL) as dead,
        Served(upstreams=[(LOCAL, dead), (LOCAL, upstream.port)]) as running,
    ):
        assert running.dig("upstream.example") == ["192.0.2.7"]
        assert running.dig("upstream.example", tcp=True) == ["192.0.2.7"]


def test_a_silent_first_upstream_costs_one_timeout_then_is_skipped(upstream: Dnsmasq) -> None:
    """A black hole first: the first query waits one timeout, later ones go straight on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind((LOCAL, 0))
        upstreams = [(LOCAL, hole.getsockname()[1]), (LOCAL, upstream.port)]
        # A timeout only the black hole exceeds, also on a busy machine; dig waits longer.
        with Served(upstreams=upstreams, upstream_timeout=3.0) as running:
            assert running.dig("upstream.example", timeout=10) == ["192.0.2.7"]
            for _ in range(3):
                assert running.dig("upstream.example") == ["192.0.2.7"]
            # One timeout in all: the later queries went straight to dnsmasq.
            errors = running.call(lambda: dict(running.service.stats.forwarder_errors))
            assert errors == {"timeout": 1}


def test_truncated_upstream_answers_are_fetched_over_tcp_for_tcp_clients(upstream: Dnsmasq) -> None:
    """big.example (100 A upstream): TC to a UDP client, all 100 to a TCP client."""
    with Served(upstreams=[(LOCAL, upstream.port)]) as running:
        assert "tc" in running.query("big.example", options=["+ignore"]).flags
        assert len(running.dig("big.example", tcp=True)) == 100


def test_all_upstreams_failing_gives_servfail() -> None:
    """Two dead upstreams: SERVFAIL with ra, and the counters say why."""
    with (
        refusing_port(LOCAL) as one,
        refusing_port(LOCAL) as two,
        Served(upstreams=[(LOCAL, one), (LOCAL, two)]) as running,
    ):
        response = running.query("example.com")
        assert response.status == "SERVFAIL"
        assert "ra" in response.flags
        assert running.call(lambda: running.service.stats.forwarder_errors) == {"unreachable": 2}


# --- junk on the wire


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Served]:
    with Served(tcp_timeout=1.0) as running:
        yield running


_QUERIES = st.builds(
    lambda name, rdtype: dns.message.make_query(name, rdtype, use_edns=0).to_wire(),
    st.sampled_from(["worker-0", "WORKER-1.node.internal", "nope.node.internal", "example.com"]),
    st.sampled_from(["A", "AAAA", "MX", "ANY", "PTR"]),
)


def _mutate(wire: bytes, data: st.DataObject) -> bytes:
    out = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(out) - 1)) if out else 0
        choice = data.draw(st.integers(0, 2))
        if choice == 0 and out:
            out[at] = data.draw(st.integers(0, 255))
        elif choice == 1:
            del out[at:]
        else:
            out[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    packets=st.lists(
        st.one_of(st.binary(max_size=300), st.builds(_mutate, _QUERIES, st.data())),
        min_size=1,
        max_size=5,
    ),
    tcp=st.booleans(),
)
def test_random_and_mutated_packets_leave_the_server_answering(
    fuzzed: Served, packets: list[bytes], tcp: bool
) -> None:
    """Junk over UDP or in TCP frames; afterwards a normal query is answered at once."""
    if tcp:
        with tcp_connect(fuzzed.port) as sock:
            sock.sendall(b"".join(struct.pack(">H", len(p)) + p for p in packets))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in packets:
                sock.sendto(packet, (LOCAL, fuzzed.port))
    query = dns.message.make_query("worker-0.node.internal", "A")
    reply = dns.query.udp(query, LOCAL, port=fuzzed.port, timeout=2)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["10.240.0.101"]
    assert fuzzed.call(lambda: fuzzed.service.stats.answers.errors) == 0


def test_the_dns_server_does_not_load_the_metrics_library() -> None:
    """With metrics off, prometheus_client (~70 modules, ~4 MB RSS on the LB host) stays out:
    the answer-time histogram's counters live in a module of their own."""
    import subprocess
    import sys

    probe = (
        "import sys, nodehosts.adapters.dns_server; "
        "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"
