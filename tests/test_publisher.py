"""When the daemon publishes: at once when idle, coalesced only while changes keep coming.

The real `Daemon` in this process with its real hosts-file sink; only the Node source is
replaced by one the test drives through the listener calls (`nodes_synced`, `nodes_changed`)
the kube source makes. The coalescing window is made long so that a daemon that waits it out
before publishing could not pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodehosts.adapters.sdnotify import Notifier
from nodehosts.app import publisher
from nodehosts.app.daemon import Daemon
from nodehosts.config import Settings
from nodehosts.core.hosts import read_generation
from nodehosts.core.model import NodeInfo

CEILING = 10.0  # generous: a loaded CI machine, never a speed claim


class _DrivenSource:
    """Stands in for the kube source: the test calls the listener itself."""

    def __init__(self, _daemon: Daemon) -> None:
        pass

    async def run(self) -> None:
        await asyncio.Event().wait()

    def restart(self) -> None:
        pass


def _node(name: str, address: str) -> NodeInfo:
    return NodeInfo(name, (("InternalIP", address),), True, False)


def _nodes(*pairs: tuple[str, str]) -> dict[str, NodeInfo]:
    return {name: _node(name, address) for name, address in pairs}


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    settings = Settings(hosts_file=tmp_path / "nodes.hosts", control_socket=None, state_dir=None)
    daemon = Daemon(settings, source_factory=_DrivenSource, notifier=Notifier(None))
    task = asyncio.create_task(daemon.run())
    yield daemon
    daemon.stop()
    await asyncio.wait_for(task, CEILING)


async def _file_shows(path: Path, line: str) -> str:
    async with asyncio.timeout(CEILING):
        while True:
            text = path.read_text() if path.exists() else ""
            if line in text.splitlines():
                return text
            await asyncio.sleep(0.005)


async def test_an_idle_daemon_publishes_a_change_at_once(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first LIST and a lone change later are each written without waiting a window."""
    monkeypatch.setattr(publisher, "COALESCE_SECONDS", 3600.0)
    hosts = daemon.settings.hosts_file
    assert hosts is not None
    daemon.nodes_synced(_nodes(("worker-0", "10.240.0.101")), "1")
    await _file_shows(hosts, "10.240.0.101 worker-0.node.internal worker-0")
    await asyncio.sleep(0.2)  # idle: nothing else changed since
    monkeypatch.setattr(publisher, "COALESCE_SECONDS", 0.1)  # idle for longer than the window
    daemon.nodes_changed(_nodes(("worker-0", "10.240.0.102")), "2")
    text = await _file_shows(hosts, "10.240.0.102 worker-0.node.internal worker-0")
    assert read_generation(text) == 2


async def test_a_burst_of_changes_makes_a_handful_of_writes_and_ends_complete(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 changes arriving back to back: the first is published at once, the rest together
    after the window, and the file ends with every change in it."""
    monkeypatch.setattr(publisher, "COALESCE_SECONDS", 1.0)
    hosts = daemon.settings.hosts_file
    assert hosts is not None
    nodes: dict[str, Any] = _nodes(("worker-0", "10.240.0.101"))
    daemon.nodes_synced(dict(nodes), "1")
    await _file_shows(hosts, "10.240.0.101 worker-0.node.internal worker-0")
    await asyncio.sleep(1.1)
    for i in range(200):
        nodes[f"worker-{i + 1}"] = _node(f"worker-{i + 1}", f"10.240.1.{i + 1}")
        daemon.nodes_changed(dict(nodes), str(i + 2))
        await asyncio.sleep(0)  # let the publisher run between events, as the loop would
    text = await _file_shows(hosts, "10.240.1.200 worker-200.node.internal worker-200")
    assert len(text.splitlines()) == 2 + 201  # header, every node
    generation = read_generation(text)
    assert generation is not None
    assert generation <= 1 + 4, f"{generation - 1} writes for 200 changes"


async def test_records_follow_inventory_snapshots_delivered_with_and_without_a_publication_between(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the publisher gives the record index only the names an inventory snapshot says
    changed, chained over snapshots it never published (a burst) and dropped after a relist.
    Random adds, moves (names and Hostnames that collide included) and deletes, delivered as the
    kube source delivers them: the published records are always a full build's."""
    import random

    from nodehosts.core.inventory import NodeInventory
    from nodehosts.core.records import build_publication
    from nodehosts.testing.objects import make_node

    monkeypatch.setattr(publisher, "COALESCE_SECONDS", 0.0)
    rng = random.Random(16)
    inventory = NodeInventory()
    names = [f"worker-{i}" for i in range(12)]

    def event() -> tuple[str, dict[str, Any]]:
        name = rng.choice(names)
        if rng.random() < 0.2:
            return "DELETED", {"metadata": {"name": name}}
        node = make_node(
            name,
            addresses=[f"10.240.0.{rng.randrange(1, 6)}"],
            hostname=rng.choice([None, rng.choice(names), "shared"]),
            ready=rng.choice([True, True, False]),
        )
        return rng.choice(["ADDED", "MODIFIED"]), node

    inventory.replace([make_node(n, addresses=[f"10.240.1.{i}"]) for i, n in enumerate(names)], "1")
    daemon.nodes_synced(inventory.objects, "1")
    for step in range(300):
        if step % 97 == 96:  # a relist: its snapshot cannot say what changed
            inventory.replace([event()[1] for _ in range(5)], str(step))
            daemon.nodes_synced(inventory.objects, str(step))
        elif inventory.apply(*event()):
            daemon.nodes_changed(inventory.objects, str(step))
        if rng.random() < 0.3:
            await daemon.publisher.publish()
            want = build_publication(
                inventory.objects.values(), [], daemon.settings.record_policy
            ).records
            assert daemon.status.records == want, f"step {step}"
