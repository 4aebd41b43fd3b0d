"""port_holder against the real /proc: sockets this test process holds are found by address,
family and wildcard, and a free port has no holder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from nodehosts.adapters.portholder import likely_holders, port_holder
from tests.helpers.net import free_port

OURS = f"{Path('/proc/self/comm').read_text().strip()} (pid {os.getpid()})"


@pytest.mark.parametrize(
    ("family", "kind", "bind", "asked"),
    [
        (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, socket.SOCK_STREAM, "::1", "::1"),
        (socket.AF_INET6, socket.SOCK_DGRAM, "::1", "::1"),
        (socket.AF_INET, socket.SOCK_DGRAM, "0.0.0.0", "127.0.0.1"),  # the wildcard covers it
    ],
    ids=["udp4", "tcp4", "tcp6", "udp6", "wildcard"],
)
def test_the_process_holding_a_port_is_named(
    family: socket.AddressFamily, kind: socket.SocketKind, bind: str, asked: str
) -> None:
    with socket.socket(family, kind) as sock:
        sock.bind((bind, 0))
        if kind == socket.SOCK_STREAM:
            sock.listen(1)
        assert port_holder(asked, sock.getsockname()[1]) == OURS


def test_a_free_port_has_no_holder() -> None:
    assert port_holder("127.0.0.1", free_port()) is None


def test_another_address_on_the_same_port_is_not_the_holder() -> None:
    """127.0.0.2:P held says nothing about 127.0.0.1:P."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        assert port_holder("127.0.0.1", sock.getsockname()[1]) is None


def test_the_hint_names_ss_with_the_port() -> None:
    assert "ss -lntup 'sport = :8080'" in likely_holders(8080)
