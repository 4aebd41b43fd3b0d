"""Forwarding under a flood: at most `max_forwards` forwards in flight; beyond that UDP queries
are dropped and TCP ones get SERVFAIL, counted as shed, while our own names are still
answered; once the upstream answers, forwarding works again.

The upstream is a UDP server in a thread that holds every query until the test releases it,
so "in flight" is a state the test controls, not a race against a timeout.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest

from tests.adapters.test_dns_server import LOCAL, Served, udp_exchange
from tests.helpers.polling import wait_until

MAX_FORWARDS = 2


class HeldUpstream:
    """Receives queries and answers them (192.0.2.1) only when `release()` is called."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCAL, 0))
        self.port: int = self.sock.getsockname()[1]
        self.held: list[tuple[bytes, tuple[str, int]]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                wire, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            with self._lock:
                self.held.append((wire, peer))

    def count(self) -> int:
        with self._lock:
            return len(self.held)

    def release(self) -> None:
        with self._lock:
            held, self.held = self.held, []
        for wire, peer in held:
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            name = query.question[0].name
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[HeldUpstream]:
    server = HeldUpstream()
    yield server
    server.close()


def replies(clients: list[socket.socket], *, expected: int) -> dict[int, bytes]:
    """Client index -> reply, once `expected` replies came (20 s ceiling), plus any other
    reply already there: a shed query never gets one."""
    got: dict[int, bytes] = {}
    with selectors.DefaultSelector() as selector:
        for index, client in enumerate(clients):
            selector.register(client, selectors.EVENT_READ, index)
        deadline = time.monotonic() + 20
        while len(got) < expected and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                got[key.data] = key.fileobj.recv(65535)  # type: ignore[union-attr]
                selector.unregister(key.fileobj)
        for key, _ in selector.select(timeout=0):
            got[key.data] = key.fileobj.recv(65535)  # type: ignore[union-attr]
    return got


def test_forwards_beyond_the_limit_are_shed_and_the_limit_frees_up(
    upstream: HeldUpstream,
) -> None:
    """Five UDP queries for other names, two may be in flight: two reach the upstream, three
    are dropped (shed 3); a TCP query meanwhile gets SERVFAIL; worker-0 is still answered.
    After the upstream answers, the two waiting clients get 192.0.2.1 and a new query goes
    through."""
    with Served(
        upstreams=[(LOCAL, upstream.port)], upstream_timeout=60, max_forwards=MAX_FORWARDS
    ) as running:
        clients: list[socket.socket] = []
        queries = [dns.message.make_query(f"name-{i}.example", "A") for i in range(5)]
        try:
            for query in queries:
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                clients.append(client)
                client.bind((LOCAL, 0))
                client.sendto(query.to_wire(), (LOCAL, running.port))
            shed = wait_until(
                lambda: running.call(lambda: running.service.stats.forwards_shed),
                until=lambda n: n >= 3,
                timeout=20,
                what="three forwards shed",
            )
            assert shed == 3
            wait_until(
                upstream.count, until=lambda n: n == MAX_FORWARDS, timeout=20, what="the forwards"
            )
            assert running.call(lambda: running.service.stats.forwarder_errors) == {"shed": 3}

            other = dns.message.make_query("other.example", "A")
            tcp = dns.query.tcp(other, LOCAL, port=running.port, timeout=20)
            assert tcp.rcode() == dns.rcode.SERVFAIL
            assert running.dig("worker-0") == ["10.240.0.101"]

            upstream.release()
            got = replies(clients, expected=MAX_FORWARDS)
            assert len(got) == MAX_FORWARDS, "the shed queries got no reply"
            for index, wire in got.items():
                reply = dns.message.from_wire(wire)
                assert reply.id == queries[index].id
                assert reply.answer[0][0].to_text() == "192.0.2.1"
        finally:
            for client in clients:
                client.close()

        # The answered forwards leave the in-flight set just after their reply is sent.
        wait_until(
            lambda: running.call(lambda: len(running.service._forwards)),
            until=lambda n: n == 0,
            timeout=20,
            what="no forward in flight",
        )
        later = dns.message.make_query("later.example", "A")
        reply_holder: list[bytes] = []

        def ask_later() -> None:
            reply_holder.append(udp_exchange(running.port, later.to_wire(), timeout=20))

        thread = threading.Thread(target=ask_later)
        thread.start()
        wait_until(upstream.count, until=lambda n: n == 1, timeout=20, what="the later forward")
        upstream.release()
        thread.join(30)
        assert dns.message.from_wire(reply_holder[0]).answer[0][0].to_text() == "192.0.2.1"
        assert running.call(lambda: running.service.stats.forwards_shed) == 4  # 3 UDP, 1 TCP
