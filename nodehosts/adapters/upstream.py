"""Forward queries that are not ours to upstream DNS servers, over UDP with a TCP retry.

Contract of `Upstreams(servers).resolve(forward)`:
- Sends `forward.query` with a fresh random ID from a fresh socket (so a random source port)
  to one upstream at a time, each try bounded by `timeout` seconds. Only a reply with that ID,
  QR set and our question byte for byte is accepted; anything else on the socket is ignored.
- A truncated (TC) UDP reply is retried over TCP to the same upstream when the client came over
  TCP; a UDP client gets the TC reply as it is (its full answer would not fit either) and
  retries over TCP itself.
- Timeouts, unreachable servers (ICMP refused), bad replies, SERVFAIL and REFUSED move on to the
  next upstream. The search starts at the upstream that answered last, so a dead first server
  costs one timeout, not one per query.
- Returns the upstream's reply bytes with the client's ID put back, or `forward.failure`
  (SERVFAIL) when every upstream failed. Never raises (except for cancellation).
- Counts in `stats`; logs one line when an upstream starts failing and one when it answers again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from nodehosts.core.dns.answer import Forward
from nodehosts.core.dns.wire import REFUSED, SERVFAIL, plain_question

log = structlog.get_logger(__name__)

Server = tuple[str, int]


@dataclass(slots=True)
class UpstreamStats:
    """What happened to forwarded queries; every field only grows."""

    queries: int = 0  # resolve() calls
    answered: int = 0  # resolve() calls that returned an upstream's reply
    failed: int = 0  # resolve() calls that returned SERVFAIL: every upstream failed
    tcp_retries: int = 0
    # Failed tries by reason: timeout, unreachable, servfail, refused, bad_reply.
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class _TryFailed(Exception):
    """One upstream did not give a usable reply; the message is the reason (a stats key)."""


class Upstreams:
    """A list of upstream servers used with failover; cheap to create, nothing to close."""

    def __init__(self, servers: Sequence[Server], *, timeout: float = 1.0) -> None:
        if not servers:
            raise ValueError("upstreams: at least one server is needed")
        self.servers: tuple[Server, ...] = tuple((host, int(port)) for host, port in servers)
        self.timeout = timeout
        self.stats = UpstreamStats()
        self._preferred = 0
        self._failing: set[Server] = set()

    async def resolve(self, forward: Forward) -> bytes:
        """The upstream's reply to `forward.query` (client's ID), or `forward.failure`."""
        self.stats.queries += 1
        query = forward.query
        question = plain_question(query)
        count = len(self.servers)
        for step in range(count):
            index = (self._preferred + step) % count
            server = self.servers[index]
            try:
                reply = await self._try(server, query, question, tcp=forward.transport == "tcp")
            except _TryFailed as failed:
                self.stats.error(str(failed))
                if server not in self._failing:
                    self._failing.add(server)
                    log.warning("dns_upstream_failing", upstream=_label(server), reason=str(failed))
                continue
            if server in self._failing:
                self._failing.discard(server)
                log.info("dns_upstream_recovered", upstream=_label(server))
            self._preferred = index
            self.stats.answered += 1
            return query[:2] + reply[2:]
        self.stats.failed += 1
        return forward.failure

    async def _try(
        self, server: Server, query: bytes, question: bytes | None, *, tcp: bool
    ) -> bytes:
        wire = secrets.token_bytes(2) + query[2:]
        try:
            reply = await self._udp(server, wire, question)
            if reply[2] & 0x02 and tcp:  # TC
                self.stats.tcp_retries += 1
                reply = await self._tcp(server, wire, question)
        except TimeoutError:
            raise _TryFailed("timeout") from None
        except (OSError, asyncio.IncompleteReadError):
            raise _TryFailed("unreachable") from None
        except _TryFailed:
            raise
        except Exception:  # whatever the loop throws at us: this upstream failed, try the next
            raise _TryFailed("error") from None
        rcode = reply[3] & 0x0F
        if rcode == SERVFAIL:
            raise _TryFailed("servfail")
        if rcode == REFUSED:
            raise _TryFailed("refused")
        return reply

    async def _udp(self, server: Server, wire: bytes, question: bytes | None) -> bytes:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _ReplyCatcher(wire, question, waiter), remote_addr=server
        )
        try:
            transport.sendto(wire)
            async with asyncio.timeout(self.timeout):
                return await waiter
        finally:
            transport.close()

    async def _tcp(self, server: Server, wire: bytes, question: bytes | None) -> bytes:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(*server)
            try:
                writer.write(len(wire).to_bytes(2, "big") + wire)
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = await reader.readexactly(size)
            finally:
                writer.close()
        if not _matches(wire, question, reply):
            raise _TryFailed("bad_reply")
        return reply


class _ReplyCatcher(asyncio.DatagramProtocol):
    """Resolves `waiter` with the first datagram that answers `wire`; ICMP errors fail it."""

    def __init__(self, wire: bytes, question: bytes | None, waiter: asyncio.Future[bytes]) -> None:
        self._wire = wire
        self._question = question
        self._waiter = waiter

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self._waiter.done() and _matches(self._wire, self._question, data):
            self._waiter.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self._waiter.done():
            self._waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("socket closed"))


def _matches(wire: bytes, question: bytes | None, reply: bytes) -> bool:
    """Is `reply` a response to `wire`: same ID, QR set, the same question byte for byte?"""
    if len(reply) < 12 or reply[:2] != wire[:2] or not reply[2] & 0x80:
        return False
    if question is None:
        return True
    return reply[4:6] == b"\x00\x01" and reply[12 : 12 + len(question)] == question


def _label(server: Server) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
