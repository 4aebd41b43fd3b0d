"""Serve the published records over DNS: UDP and TCP on every listen address, one answer path.

Contract of `DnsService`:
- The zone's nameserver (ns.<domain> by default) gets the specific listen addresses as its
  A/AAAA records unless `zone.nameserver_addresses` says otherwise.
- `start()` binds UDP and TCP on the same port of every `listen` address (port 0 picks a free
  port, the same for both; `addresses` tells which). `stop()` closes everything, including open
  TCP connections and forwards in flight.
- `update(records)` swaps in a new `Answerer` when the records differ from the last ones and
  returns True; the SOA serial moves (time-based, strictly increasing) only then. Until the
  first update, names in the zone get SERVFAIL ("not loaded"), never a cacheable NXDOMAIN.
- Every datagram and every TCP message goes through `Answerer.handle` (nodehosts.core.dns);
  what is not ours is forwarded (nodehosts.adapters.upstream) only for clients inside
  `allow_recursion_from` and only when there are upstreams. Everyone else gets REFUSED for it.
- TCP (RFC 7766): length-prefixed messages, many per connection, answered as they complete
  (forwards may overtake). A connection with no complete query for `tcp_timeout` seconds (and no
  forward pending) is closed, so a client that stalls mid-message or stops reading is dropped.
  At `max_tcp_connections`, a new connection closes the one that has been quiet longest, so
  stalled clients cannot lock others out.
- At most `max_forwards` forwards in flight; beyond that UDP queries are dropped and TCP ones get
  SERVFAIL, so a flood cannot make us open unbounded sockets.
- `stats` counts cheaply (no per-query logging): replies per QTYPE and RCODE (`queries`, what
  nodehosts.adapters.metrics reads), queries per transport, TCP timeouts and evictions, shed
  forwards, and the forwarder's failed tries by reason (`forwarder_errors`).
- Logs one line per state change: listening, zone updated (serial, names, build time), names
  that cannot be served, stopped; the forwarder logs upstreams failing and recovering.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import structlog

from nodehosts.adapters.durations import Durations
from nodehosts.adapters.upstream import Upstreams, UpstreamStats
from nodehosts.core.dns.answer import AnswerCounts, Answerer, Forward
from nodehosts.core.dns.zone import ZoneConfig, next_serial
from nodehosts.core.model import HostChanges, RecordSet
from nodehosts.runtime import loop_name

log = structlog.get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
# Ask for this much receive buffer on UDP sockets (the kernel caps it at net.core.rmem_max):
# a burst of queries while the loop is busy rebuilding must not be dropped by the kernel.
_UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
_BIND_ATTEMPTS = 20
# Datagrams handled per wakeup before other callbacks (TCP, timers) get a turn.
_UDP_BATCH = 64
# Forwards one TCP connection may have in flight before we stop reading from it.
_TCP_PIPELINE = 32


class DnsStats:
    """Counters of the DNS service; every number only grows. Read at scrape time (metrics.py)."""

    __slots__ = (
        "answer_seconds",
        "answers",
        "forwards_shed",
        "tcp_connections",
        "tcp_evicted",
        "tcp_queries",
        "tcp_timeouts",
        "udp_queries",
        "udp_send_errors",
        "upstream",
        "zone_updates",
    )

    def __init__(self, upstream: UpstreamStats | None = None) -> None:
        self.answers = AnswerCounts()
        self.upstream = upstream
        self.udp_queries = 0
        self.udp_send_errors = 0
        self.tcp_queries = 0
        self.tcp_connections = 0
        self.tcp_timeouts = 0
        self.tcp_evicted = 0
        self.forwards_shed = 0  # forwards refused because too many were in flight
        self.zone_updates = 0
        # Answer times (metrics.py): per wakeup for local answers, per forward for upstream ones.
        self.answer_seconds = {"local": Durations(), "upstream": Durations()}

    @property
    def queries(self) -> dict[tuple[int, int], int]:
        """(QTYPE, RCODE) -> replies sent, forwarded ones included (by the upstream's RCODE)."""
        return self.answers.by_type_and_rcode()

    @property
    def forwarder_errors(self) -> dict[str, int]:
        """Reason -> failed upstream tries (timeout, unreachable, ...) and shed forwards."""
        errors = dict(self.upstream.errors) if self.upstream is not None else {}
        if self.forwards_shed:
            errors["shed"] = self.forwards_shed
        return errors


class ListenError(OSError):
    """A listen address that cannot be bound (in use, not on this host, no capability)."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror)
        self.host, self.port = host, port


class DnsService:
    """The DNS server: see the module docstring."""

    def __init__(
        self,
        *,
        listen: Sequence[tuple[str, int]],
        zone: ZoneConfig,
        upstreams: Sequence[tuple[str, int]] = (),
        allow_recursion_from: Iterable[Network | str] = LOOPBACK,
        upstream_timeout: float = 1.0,
        tcp_timeout: float = 5.0,
        max_tcp_connections: int = 128,
        max_forwards: int = 512,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not listen:
            raise ValueError("dns listen: at least one address is needed")
        self.listen = tuple((host, int(port)) for host, port in listen)
        self.zone = _with_nameserver_glue(zone, self.listen)
        self.tcp_timeout = tcp_timeout
        self.max_tcp_connections = max(1, max_tcp_connections)
        self.max_forwards = max_forwards
        self._clock = clock
        self._networks = tuple(ipaddress.ip_network(n) for n in allow_recursion_from)
        self._upstreams = Upstreams(upstreams, timeout=upstream_timeout) if upstreams else None
        self.stats = DnsStats(self._upstreams.stats if self._upstreams else None)
        self._allowed_cache: dict[str, bool] = {}
        self._records: RecordSet | None = None
        self._serial: int | None = None
        self.answerer = Answerer.for_records(None, self.zone, serial=0, counts=self.stats.answers)
        self._udp: list[_UdpListener] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._addresses: list[tuple[str, int]] = []
        self._tcp: OrderedDict[_TcpConnection, None] = OrderedDict()
        self._forwards: set[asyncio.Task[None]] = set()

    # --- lifecycle

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of every listen address (UDP and TCP share the port)."""
        return list(self._addresses)

    @property
    def serial(self) -> int | None:
        """The SOA serial of the records being served; None before the first update."""
        return self._serial

    async def start(self) -> None:
        """Bind every listen address (UDP and TCP); raises OSError if one cannot be bound."""
        loop = asyncio.get_running_loop()
        try:
            for host, port in self.listen:
                try:
                    udp_sock, tcp_sock = _bind_pair(host, port)
                except OSError as error:
                    raise ListenError(host, port, error) from error
                bound_port = udp_sock.getsockname()[1]
                self._udp.append(_UdpListener(self, udp_sock, loop))
                server = await loop.create_server(lambda: _TcpConnection(self), sock=tcp_sock)
                self._servers.append(server)
                self._addresses.append((host, bound_port))
                log.info("dns_listening", address=host, port=bound_port, loop=loop_name(loop))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop serving: close sockets and connections, cancel forwards in flight."""
        for server in self._servers:
            server.close()
        for connection in list(self._tcp):
            connection.abort()
        for listener in self._udp:
            listener.close()
        for task in list(self._forwards):
            task.cancel()
        await asyncio.gather(*self._forwards, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        if self._servers or self._udp:
            log.info("dns_stopped", addresses=[f"{h}:{p}" for h, p in self._addresses])
        self._servers, self._udp, self._addresses = [], [], []

    def update(self, records: RecordSet, changes: HostChanges | None = None) -> bool:
        """Serve `records` from now on; False (and nothing rebuilt) if they are unchanged.

        `changes` (from `RecordIndex.changes`) spares the comparison of every host when it
        leads from the records served now to `records`."""
        if records == self._records:
            return False
        started = time.perf_counter()
        serial = next_serial(self._serial, self._clock())
        # On the loop the previous Answerer is replaced before any query: its tables may be
        # taken over instead of copied (the copy was most of an update's cost).
        self._install(self._build(records, serial, changes, adopt=True), records, serial, started)
        return True

    async def update_in_thread(
        self, records: RecordSet, changes: HostChanges | None = None
    ) -> bool:
        """`update`, with the answer cache built in a worker thread: until it is swapped in,
        queries are answered from the previous one (20,000 Nodes: a build of ~100+ ms must
        not stall answering). One at a time: the caller serialises its updates."""
        if records == self._records:
            return False
        started = time.perf_counter()
        serial = next_serial(self._serial, self._clock())
        # adopt=False: the previous Answerer keeps answering while this one is built.
        answerer = await asyncio.to_thread(self._build, records, serial, changes, adopt=False)
        self._install(answerer, records, serial, started)
        return True

    def _build(
        self, records: RecordSet, serial: int, changes: HostChanges | None, *, adopt: bool
    ) -> Answerer:
        # Without adopt the previous Answerer is only read, so this may run in a thread.
        return Answerer.for_records(
            records,
            self.zone,
            serial=serial,
            counts=self.stats.answers,
            previous=self.answerer,
            changes=changes,
            adopt=adopt,
        )

    def _install(self, answerer: Answerer, records: RecordSet, serial: int, started: float) -> None:
        self.answerer, self._records, self._serial = answerer, records, serial
        self.stats.zone_updates += 1
        log.info(
            "dns_zone_updated",
            zone=self.zone.domain,
            serial=serial,
            hosts=len(records),
            names=answerer.table.name_count,
            build_seconds=round(time.perf_counter() - started, 4),
            build="incremental" if answerer.table.built_from_previous else "full",
        )
        if answerer.table.skipped_names:
            log.warning("dns_names_skipped", names=list(answerer.table.skipped_names))

    # --- shared by the protocols

    def recursion_allowed(self, host: str) -> bool:
        """May this client address be forwarded upstream (and so see RA)?"""
        if self._upstreams is None:
            return False
        allowed = self._allowed_cache.get(host)
        if allowed is None:
            try:
                address = ipaddress.ip_address(host.partition("%")[0])
            except ValueError:
                return False
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            allowed = any(address in network for network in self._networks)
            if len(self._allowed_cache) >= 4096:
                self._allowed_cache.clear()
            self._allowed_cache[host] = allowed
        return allowed

    def forward(self, forward: Forward, send: Callable[[bytes], None]) -> None:
        """Resolve `forward` upstream in the background and `send` the reply."""
        if self._upstreams is None or len(self._forwards) >= self.max_forwards:
            self.stats.forwards_shed += 1
            if forward.transport == "tcp":
                self.stats.answers.count(forward.qtype, forward.failure[3] & 0x0F)
                send(forward.failure)
            return
        task = asyncio.get_running_loop().create_task(self._forward(self._upstreams, forward, send))
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)

    async def _forward(
        self, upstreams: Upstreams, forward: Forward, send: Callable[[bytes], None]
    ) -> None:
        started = time.perf_counter()
        reply = await upstreams.resolve(forward)
        self.stats.answers.count(forward.qtype, reply[3] & 0x0F)
        send(reply)
        self.stats.answer_seconds["upstream"].observe(time.perf_counter() - started)

    def tcp_opened(self, connection: _TcpConnection) -> None:
        self.stats.tcp_connections += 1
        while len(self._tcp) >= self.max_tcp_connections:
            quietest = next(iter(self._tcp))
            self.stats.tcp_evicted += 1
            quietest.abort()
            self._tcp.pop(quietest, None)
        self._tcp[connection] = None

    def tcp_active(self, connection: _TcpConnection) -> None:
        if connection in self._tcp:
            self._tcp.move_to_end(connection)

    def tcp_closed(self, connection: _TcpConnection) -> None:
        self._tcp.pop(connection, None)


class _UdpListener:
    """One UDP socket: every datagram is a query; replies go back to its source.

    Reads the socket directly from a reader callback, up to `_UDP_BATCH` datagrams per wakeup,
    instead of through a DatagramProtocol: asyncio's transport reads one datagram per loop
    iteration, which measured several times slower under load (bench/README.md).
    """

    def __init__(
        self, service: DnsService, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._service = service
        self._sock = sock
        self._loop = loop
        self._fd = sock.fileno()
        loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        started = time.perf_counter()
        service = self._service
        stats = service.stats
        handle = service.answerer.handle
        allowed = service.recursion_allowed
        recvfrom = self._sock.recvfrom
        sendto = self._sock.sendto
        received = 0
        for _ in range(_UDP_BATCH):
            try:
                data, addr = recvfrom(65535)
            except OSError:  # BlockingIOError: drained; anything else: try again next wakeup
                break
            received += 1
            result = handle(data, transport="udp", recursion_allowed=allowed(addr[0]))
            if result.__class__ is bytes:
                try:
                    sendto(result, addr)
                except OSError:  # send buffer full or the address is unroutable: drop
                    stats.udp_send_errors += 1
            elif result is not None:
                service.forward(result, functools.partial(self._send, addr=addr))  # type: ignore[arg-type]
        stats.udp_queries += received
        if received:
            stats.answer_seconds["local"].observe(time.perf_counter() - started, received)

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self._fd >= 0:
            try:
                self._sock.sendto(reply, addr)
            except OSError:
                self._service.stats.udp_send_errors += 1

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
            self._sock.close()


class _TcpConnection(asyncio.Protocol):
    """One TCP client: length-prefixed queries in, length-prefixed replies out."""

    def __init__(self, service: DnsService) -> None:
        self._service = service
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._allowed = False
        self._pending = 0
        self._reading = True
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._allowed = bool(peer) and self._service.recursion_allowed(peer[0])
        self._last = self._loop.time()
        self._timer = self._loop.call_at(self._last + self._service.tcp_timeout, self._check_idle)
        self._service.tcp_opened(self)

    def data_received(self, data: bytes) -> None:
        started, queries = time.perf_counter(), self._service.stats.tcp_queries
        buffer = self._buffer
        buffer += data
        service = self._service
        while len(buffer) >= 2:
            size = buffer[0] << 8 | buffer[1]
            if len(buffer) < size + 2:
                break
            query = bytes(buffer[2 : size + 2])
            del buffer[: size + 2]
            self._last = self._loop.time()
            service.tcp_active(self)
            service.stats.tcp_queries += 1
            result = service.answerer.handle(
                query, transport="tcp", recursion_allowed=self._allowed
            )
            if result.__class__ is bytes:
                self._send(result)
            elif result is not None:
                self._pending += 1
                if self._pending >= _TCP_PIPELINE and self._transport is not None:
                    self._transport.pause_reading()
                service.forward(result, self._forwarded)  # type: ignore[arg-type]
        if answered := service.stats.tcp_queries - queries:
            service.stats.answer_seconds["local"].observe(time.perf_counter() - started, answered)

    def _send(self, reply: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(len(reply).to_bytes(2, "big") + reply)

    def _forwarded(self, reply: bytes) -> None:
        self._pending -= 1
        self._send(reply)
        if self._pending == _TCP_PIPELINE - 1 and self._transport is not None:
            self._transport.resume_reading()

    def _check_idle(self) -> None:
        """Close the connection if no query completed within the timeout (and none is pending)."""
        deadline = self._last + self._service.tcp_timeout
        now = self._loop.time()
        if self._pending or now < deadline:
            self._timer = self._loop.call_at(
                max(deadline, now + 0.05) if not self._pending else now + 0.1, self._check_idle
            )
            return
        self._service.stats.tcp_timeouts += 1
        self.abort()

    def abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its queries; the idle timer
        # then closes the connection unless it catches up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and self._pending < _TCP_PIPELINE:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._service.tcp_closed(self)


def _with_nameserver_glue(zone: ZoneConfig, listen: Sequence[tuple[str, int]]) -> ZoneConfig:
    """Without configured nameserver addresses, the specific listen addresses are the NS's.

    So `dig NS node.internal` names a server that resolves (ns.node.internal -> 10.240.0.40 when
    listening there). Wildcard listens (0.0.0.0, ::) say nothing and add nothing.
    """
    if zone.nameserver_addresses:
        return zone
    addresses = []
    for host, _ in listen:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not address.is_unspecified and address not in addresses:
            addresses.append(address)
    return dataclasses.replace(zone, nameserver_addresses=tuple(addresses))


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same address and port (port 0: a free one)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    last_error: OSError | None = None
    for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for sock in (udp, tcp):
                if family == socket.AF_INET6:
                    # Separate sockets for :: and 0.0.0.0, as asyncio does for TCP.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setblocking(False)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):  # best effort: the default works too
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RECEIVE_BUFFER)
            udp.bind(address)
            bound = udp.getsockname()
            tcp.bind((bound[0], bound[1], *bound[2:]))
            tcp.listen(128)
        except OSError as exc:
            udp.close()
            tcp.close()
            last_error = exc
            continue
        return udp, tcp
    assert last_error is not None
    raise last_error
