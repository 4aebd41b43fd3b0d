"""Loopback ports for tests that run real servers.

Contract: `free_port()` returns a port on which both UDP and TCP can bind at that address right
now (DNS servers need both). Another process may take it before the caller binds, so callers
that start a server retry with a new port when the bind fails: `with_free_port(start)` does
that for any `start(port)` that raises OSError(EADDRINUSE) (`Dnsmasq.start` and
`tests.helpers.daemon.start_dns_daemon` do it their own way). `bound_tcp_socket()` is a
listening TCP socket on a free port, to make a port that is taken; `bound_udp_socket()` the
same for UDP (a DNS port that is taken). `refusing_port()` is a port nothing answers on (UDP
gets ICMP port unreachable, TCP a reset, as if nothing listened) that no other process can
take meanwhile: a "dead upstream" that stays dead.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = [
    "bound_tcp_socket",
    "bound_udp_socket",
    "free_port",
    "refusing_port",
    "with_free_port",
]

T = TypeVar("T")
ATTEMPTS = 10


def free_port(address: str = "127.0.0.1") -> int:
    """A high port free for both UDP and TCP on `address` (127.0.0.0/8 or ::1)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {address}")


def with_free_port(start: Callable[[int], T], *, address: str = "127.0.0.1") -> T:
    """`start(port)` on a free port, again on another while it fails with EADDRINUSE."""
    for _ in range(ATTEMPTS - 1):
        try:
            return start(free_port(address))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
    return start(free_port(address))


@contextlib.contextmanager
def bound_tcp_socket(address: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A TCP socket listening on a free port of `address` (the port is then taken)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        sock.listen(8)
        yield sock


@contextlib.contextmanager
def bound_udp_socket(address: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A UDP socket bound to a free port of `address` (the port is then taken; never read)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        yield sock


@contextlib.contextmanager
def refusing_port(address: str = "127.0.0.1") -> Iterator[int]:
    """A port of `address` held by this process that refuses UDP and TCP (see the module).

    Linux delivers a datagram to a connected UDP socket only from its peer, so one connected
    to itself holds the port and others get "port unreachable"; a bound TCP socket that does
    not listen holds the port and answers SYNs with a reset.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                udp.connect((address, port))
                yield port
                return
    raise RuntimeError(f"no port free for both UDP and TCP on {address}")
