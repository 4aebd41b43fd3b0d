"""StatusBoard: what systemd, the metrics and `dump --watch` are told when the status changes.

A real datagram socket stands in for the service manager (sd_notify is our I/O boundary)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.adapters.metrics import Metrics
from nodehosts.adapters.sdnotify import Notifier
from nodehosts.app.statusboard import StatusBoard
from nodehosts.core import status as st
from nodehosts.core.model import Host, NodeDecision, Publication, RecordSet

T0 = 1_767_268_800.0


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[dict[str, str]]:
    messages = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return messages
        messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))


def publication(*addresses: str) -> Publication:
    hosts = tuple(
        Host((f"worker-{i}",), (ipaddress.ip_address(a),), "node", f"worker-{i}")
        for i, a in enumerate(addresses)
    )
    decisions = tuple(
        NodeDecision(h.canonical, h.names, h.addresses, True, False, True) for h in hosts
    )
    return Publication(records=RecordSet(hosts), decisions=decisions)


def metric(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_ready_once_status_on_change_silent_after_stopping(
    tmp_path: Path, manager: socket.socket
) -> None:
    metrics = Metrics()
    board = StatusBoard(Notifier(str(tmp_path / "notify.sock")), metrics)
    board.update(board.status)
    assert received(manager) == [{"STATUS": "waiting for the first list of Nodes"}]
    board.update(board.status)  # the same text: not sent again
    board.record(st.synced(board.status, "1", at=T0))  # recorded: not told
    assert received(manager) == []

    board.update(st.published(board.status, publication("10.0.0.1")))
    ready_text = "1/1 nodes published, 1 hosts, generation 1, last sync 2026-01-01T12:00:00Z"
    assert received(manager) == [{"READY": "1", "STATUS": ready_text}]
    assert board.ready.is_set()
    assert metric(metrics, "nodehosts_ready") == 1
    assert metric(metrics, "nodehosts_records_generation") == 1

    board.update(st.published(board.status, publication("10.0.0.2")))
    assert received(manager) == [{"STATUS": ready_text.replace("generation 1", "generation 2")}]

    board.stopping()
    board.update(st.api_failed(board.status, "unreachable", "refused", at=T0))
    assert received(manager) == [{"STOPPING": "1", "STATUS": "stopping"}]


async def test_saved_records_are_stale_until_the_first_publication(
    tmp_path: Path, manager: socket.socket
) -> None:
    metrics = Metrics()
    board = StatusBoard(Notifier(str(tmp_path / "notify.sock")), metrics)
    saved = publication("10.0.0.1")
    board.update(st.serving_saved(board.status, saved.records, saved_at=T0))
    assert metric(metrics, "nodehosts_records_stale") == 1
    board.update(st.published(board.status, saved))
    assert metric(metrics, "nodehosts_records_stale") == 0
    assert [m.get("READY") for m in received(manager)] == [None, "1"]


async def test_a_watcher_wakes_when_the_generation_moves() -> None:
    board = StatusBoard(Notifier(None), Metrics())
    waiting = asyncio.create_task(board.wait_generation_change(0, timeout=30))
    await asyncio.sleep(0.01)
    board.update(st.api_failed(board.status, "gone", "410", at=T0))  # no new generation
    await asyncio.sleep(0.01)
    assert not waiting.done()
    board.update(st.published(board.status, publication("10.0.0.1")))
    await asyncio.wait_for(waiting, 10)
