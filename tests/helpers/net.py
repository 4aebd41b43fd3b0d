"""Loopback ports for tests that run real servers.

Contract: `free_port()` returns a port on which both UDP and TCP can bind at that address right
now (DNS servers need both). Another process may take it before the caller binds, so callers
that start a server should retry with a new port when the bind fails (`Dnsmasq.start` does).
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


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
