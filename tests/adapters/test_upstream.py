"""Upstreams (the forwarder) against a real dnsmasq and against scripted UDP servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import structlog

from nodehosts.adapters.upstream import Upstreams
from nodehosts.core.dns.answer import Answerer, Forward
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import RecordSet
from tests.helpers.dnsmasq import Dnsmasq, stand_in_upstream
from tests.helpers.net import refusing_port

LOCAL = "127.0.0.1"
# A zone with no records: every name outside it is a Forward, with a proper SERVFAIL fallback.
ANSWERER = Answerer.for_records(RecordSet(), ZoneConfig(), serial=1)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    """dnsmasq with upstream.example (one A) and big.example (100 A: truncated over UDP)."""
    with stand_in_upstream(tmp_path_factory.mktemp("forwarder-hosts")) as server:
        yield server


def forward_of(name: str, rdtype: str = "A", *, transport: str = "udp") -> tuple[Forward, int]:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    result = ANSWERER.handle(query.to_wire(), transport=transport, recursion_allowed=True)  # type: ignore[arg-type]
    assert isinstance(result, Forward)
    return result, query.id


def addresses(wire: bytes) -> list[str]:
    return sorted(rd.to_text() for rrset in dns.message.from_wire(wire).answer for rd in rrset)


class Scripted(asyncio.DatagramProtocol):
    """A UDP 'server' that answers each query with what `script` makes of it (a list of replies)."""

    def __init__(self, script: Callable[[dns.message.Message], list[bytes]]) -> None:
        self.script = script
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        assert self.transport is not None
        for reply in self.script(dns.message.from_wire(data)):
            self.transport.sendto(reply, addr)


async def scripted(
    script: Callable[[dns.message.Message], list[bytes]],
) -> tuple[asyncio.DatagramTransport, Scripted, int]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Scripted(script), local_addr=(LOCAL, 0)
    )
    return transport, protocol, transport.get_extra_info("sockname")[1]


def reply_with(query: dns.message.Message, address: str, *, rcode: int = 0) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    if rcode == 0:
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", address))
    return reply


async def test_the_upstream_answer_comes_back_with_the_clients_id(upstream: Dnsmasq) -> None:
    """dnsmasq answers upstream.example; the reply carries our client's ID, not the one we sent."""
    forward, client_id = forward_of("upstream.example")
    reply = await Upstreams([(LOCAL, upstream.port)]).resolve(forward)
    assert dns.message.from_wire(reply).id == client_id
    assert addresses(reply) == ["192.0.2.7"]


async def test_replies_with_another_id_or_question_are_ignored() -> None:
    """A spoofer's replies (wrong ID; right ID but other question spelling) are not taken."""

    def script(query: dns.message.Message) -> list[bytes]:
        wrong_id = reply_with(query, "6.6.6.6")
        wrong_id.id = (query.id + 1) & 0xFFFF
        other_case = reply_with(query, "6.6.6.7")
        wire = bytearray(other_case.to_wire())
        wire[13:21] = wire[13:21].upper()  # "upstream" -> "UPSTREAM" in the question
        return [wrong_id.to_wire(), bytes(wire), reply_with(query, "192.0.2.99").to_wire()]

    transport, _, port = await scripted(script)
    try:
        forward, _ = forward_of("upstream.example")
        reply = await Upstreams([(LOCAL, port)]).resolve(forward)
        assert addresses(reply) == ["192.0.2.99"]
    finally:
        transport.close()


async def test_servfail_from_one_upstream_moves_on_to_the_next(upstream: Dnsmasq) -> None:
    """First upstream says SERVFAIL: the answer comes from the second; counted as servfail."""
    transport, first, port = await scripted(
        lambda q: [reply_with(q, "", rcode=dns.rcode.SERVFAIL).to_wire()]
    )
    try:
        upstreams = Upstreams([(LOCAL, port), (LOCAL, upstream.port)])
        forward, _ = forward_of("upstream.example")
        assert addresses(await upstreams.resolve(forward)) == ["192.0.2.7"]
        assert upstreams.stats.errors == {"servfail": 1}
        assert first.queries == 1
    finally:
        transport.close()


async def test_the_upstream_that_answered_is_asked_first_next_time(upstream: Dnsmasq) -> None:
    """A silent first upstream costs one timeout once; the next queries skip it."""
    transport, silent, port = await scripted(lambda q: [])
    try:
        # The timeout must be one only the silent upstream can exceed, also on a busy machine.
        upstreams = Upstreams([(LOCAL, port), (LOCAL, upstream.port)], timeout=3.0)
        forward, _ = forward_of("upstream.example")
        assert addresses(await upstreams.resolve(forward)) == ["192.0.2.7"]
        for _ in range(5):
            assert addresses(await upstreams.resolve(forward)) == ["192.0.2.7"]
        assert (silent.queries, upstreams.stats.errors) == (1, {"timeout": 1})
    finally:
        transport.close()


async def test_when_every_upstream_fails_the_reply_is_servfail() -> None:
    """Nothing listens on either port: the Forward's SERVFAIL, with the client's ID."""
    with refusing_port(LOCAL) as one, refusing_port(LOCAL) as two:
        upstreams = Upstreams([(LOCAL, one), (LOCAL, two)], timeout=5.0)
        forward, client_id = forward_of("example.com")
        reply = dns.message.from_wire(await upstreams.resolve(forward))
    assert (reply.id, reply.rcode()) == (client_id, dns.rcode.SERVFAIL)
    assert (upstreams.stats.failed, upstreams.stats.errors) == (1, {"unreachable": 2})


async def test_a_failing_upstream_is_logged_once_and_its_recovery_once() -> None:
    """Three failed queries: one dns_upstream_failing line; then one dns_upstream_recovered."""
    answering = False

    def script(query: dns.message.Message) -> list[bytes]:
        return [reply_with(query, "192.0.2.1").to_wire()] if answering else []

    transport, _, port = await scripted(script)
    try:
        upstreams = Upstreams([(LOCAL, port)], timeout=1.0)
        forward, _ = forward_of("example.com")
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                await upstreams.resolve(forward)
            answering = True
            for _ in range(3):
                assert addresses(await upstreams.resolve(forward)) == ["192.0.2.1"]
        events = [entry["event"] for entry in logs]
        assert events == ["dns_upstream_failing", "dns_upstream_recovered"]
    finally:
        transport.close()


async def test_truncated_answers_are_retried_over_tcp_for_tcp_clients(upstream: Dnsmasq) -> None:
    """big.example: a UDP client gets dnsmasq's TC reply, a TCP client all 100 addresses."""
    upstreams = Upstreams([(LOCAL, upstream.port)])
    over_udp, _ = forward_of("big.example", transport="udp")
    truncated = dns.message.from_wire(await upstreams.resolve(over_udp))
    assert truncated.flags & dns.flags.TC
    over_tcp, client_id = forward_of("big.example", transport="tcp")
    whole = await upstreams.resolve(over_tcp)
    assert dns.message.from_wire(whole).id == client_id
    assert len(addresses(whole)) == 100
    assert upstreams.stats.tcp_retries == 1
