"""The real Daemon in this process against the fake API server over real HTTP.

What it serves (the hosts file, `dump`), what it tells systemd (a real datagram socket stands
in for the service manager) and its status value, through a first sync, a Node change, an API
outage and a restart that serves the saved records: no subprocess, no stand-in for our own I/O.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from nodehosts.adapters.sdnotify import Notifier
from nodehosts.app.daemon import Daemon
from nodehosts.config import Settings
from nodehosts.core.hosts import read_generation
from nodehosts.core.status import Source, Status
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.polling import CEILING, until

HOSTS_LINE = "10.240.0.20 worker-0.node.internal worker-0"


class ServiceManager:
    """A datagram socket where the daemon's sd_notify messages arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def read(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def statuses(self) -> list[str]:
        return [m["STATUS"] for m in self.read() if "STATUS" in m]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ServiceManager]:
    manager = ServiceManager(tmp_path / "notify.sock")
    yield manager
    manager.sock.close()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.add_object("nodes", make_node("worker-0", addresses=["10.240.0.20"]))
        yield server


def settings(tmp_path: Path, kubeconfig: Path) -> Settings:
    return Settings(
        kubeconfig=kubeconfig,
        hosts_file=tmp_path / "nodes.hosts",
        state_dir=tmp_path / "state",
        control_socket=None,
    )


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[Daemon]:
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, CEILING)
    assert daemon.failed_task is None


async def test_first_sync_then_a_change_then_an_outage(
    tmp_path: Path, api: FakeApiServer, manager: ServiceManager
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    daemon = Daemon(settings(tmp_path, kubeconfig), notifier=Notifier(str(manager.path)))
    events: list[tuple[str, int]] = []
    daemon.observe(lambda event, status: events.append((event, status.generation)))
    hosts = tmp_path / "nodes.hosts"
    async with running(daemon):
        await asyncio.wait_for(daemon.board.ready.wait(), CEILING)
        status = daemon.status
        assert (status.source, status.generation, status.synced) == (Source.LIVE, 1, True)
        assert HOSTS_LINE in hosts.read_text().splitlines()
        ready = [m for m in manager.read() if m.get("READY") == "1"]
        assert len(ready) == 1
        assert ready[0]["STATUS"].startswith("1/1 nodes published, 1 hosts, generation 1, ")
        assert daemon.readiness() == (True, "1 hosts published, generation 1")
        dump = daemon.dump({})
        assert (dump["ready"], dump["stale"], dump["generation"]) == (True, False, 1)
        assert dump["counts"]["hosts"] == 1

        # A DHCP move: published once, generation 2, a `dump --watch` client woken.
        await until(lambda: events[-1:] == [("published", 1)], "the first publication done")
        before = len(events)
        watcher = asyncio.create_task(daemon.watch({"after": 1, "wait": CEILING}))
        await asyncio.sleep(0)
        api.edit_object("nodes", "worker-0", _readdress("10.240.0.21"))
        answer = await asyncio.wait_for(watcher, CEILING)
        assert answer["generation"] == 2
        assert "10.240.0.21 worker-0.node.internal worker-0" in answer["text"].splitlines()
        assert read_generation(hosts.read_text()) == 2
        # What an observer saw of that change, with the generation at each point.
        await until(lambda: events[-1] == ("published", 2), "the publication observed")
        assert events[before:] == [
            ("nodes_changed", 1),
            ("publish_started", 1),
            ("records_built", 1),
            ("published", 2),
        ]

        # The API goes away: the records stay, STATUS says since when and why.
        api.stop()
        await until(lambda: daemon.status.last_error is not None, "an API error")
        assert daemon.status.ready
        assert "10.240.0.21 worker-0.node.internal worker-0" in hosts.read_text().splitlines()
        await until(
            lambda: any("; API error since " in text for text in manager.statuses()),
            "STATUS with the error",
        )
        error = daemon.status.last_error
        assert error is not None
        assert daemon.dump({})["last_error"]["reason"] == error.reason
    assert manager.read()[-1].get("STOPPING") == "1"


async def test_a_restart_without_the_api_serves_the_saved_records_stale(
    tmp_path: Path, api: FakeApiServer, manager: ServiceManager
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    first = Daemon(settings(tmp_path, kubeconfig), notifier=Notifier(None))
    async with running(first):
        await asyncio.wait_for(first.board.ready.wait(), CEILING)
        await until(lambda: first.status.state_saved_at is not None, "the state saved")
    saved = first.status
    api.stop()

    second = Daemon(settings(tmp_path, kubeconfig), notifier=Notifier(str(manager.path)))
    async with running(second):
        await until(lambda: second.status.stale, "saved records served")
        status: Status = second.status
        assert status.records == saved.records
        assert status.generation == saved.generation  # from the hosts file's header
        assert not second.board.ready.is_set()
        await until(lambda: second.status.last_error is not None, "an API error")
        error = second.status.last_error
        assert error is not None
        assert second.readiness() == (
            False,
            f"serving saved records until the first sync (API error: {error.reason})",
        )
        await until(
            lambda: any(
                t.startswith("serving saved records, API unreachable") for t in manager.statuses()
            ),
            "STATUS: serving saved records",
        )
        dump = second.dump({})
        assert (dump["stale"], dump["ready"], dump["counts"]["hosts"]) == (True, False, 1)
        assert not any(m.get("READY") == "1" for m in manager.read())


def _readdress(address: str) -> Callable[[dict[str, Any]], None]:
    def edit(node: dict[str, Any]) -> None:
        for entry in node["status"]["addresses"]:
            if entry["type"] == "InternalIP":
                entry["address"] = address

    return edit
