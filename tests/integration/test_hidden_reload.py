"""A reload that changes the kubeconfig and the label selector together moves every watch.

The real Daemon in this process against two fake API servers over real HTTP. It starts on
cluster A with one selector; a reload points it at cluster B with another, where the selected
worker-1 reports `Hostname=controller-0`, the name of an unselected Node of B. The cluster view
(and the approver it feeds) must follow the new kubeconfig: a view still listing A does not know
B's controller-0, and worker-1 would be published with the alias `controller-0` (issue 12).
Every publication is watched, so a brief one counts too.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from nodehosts.app import clusterview
from nodehosts.app.daemon import Daemon
from nodehosts.config import Settings
from nodehosts.core.hosts import render_hosts
from nodehosts.core.status import Status
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.polling import CEILING, until

WORKER_LINE = "10.240.1.101 worker-1.node.internal worker-1"


@pytest.mark.parametrize("approver", [False, True], ids=["names-only", "with-approver"])
async def test_a_reload_to_another_cluster_and_selector_moves_the_cluster_view(
    tmp_path: Path, approver: bool
) -> None:
    with FakeApiServer() as a, FakeApiServer() as b:
        a.add_object("nodes", make_node("worker-a", addresses=["10.240.0.50"], labels={"r": "w"}))
        b.add_object(
            "nodes", make_node("controller-0", addresses=["10.240.1.10"], labels={"tier": "c"})
        )
        b.add_object(
            "nodes",
            make_node(
                "worker-1",
                addresses=["10.240.1.101"],
                hostname="controller-0",
                labels={"tier": "w"},
            ),
        )
        if approver:
            from nodehosts.testing import fake_csr

            fake_csr.install(a)
            fake_csr.install(b)
        hosts = tmp_path / "nodes.hosts"
        settings = Settings(
            kubeconfig=a.write_kubeconfig(tmp_path / "a.kubeconfig"),
            hosts_file=hosts,
            state_dir=None,
            control_socket=None,
            label_selector="r=w",
            approve_serving_csrs=approver,
        )
        daemon = Daemon(settings)
        published: list[str] = []

        def observe(event: str, status: Status) -> None:
            if event == "published":
                published.append(render_hosts(status.records))

        daemon.observe(observe)
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.board.ready.wait(), CEILING)
            assert "worker-a" in hosts.read_text()

            kb = b.write_kubeconfig(tmp_path / "b.kubeconfig")
            await daemon.apply_settings(replace(settings, kubeconfig=kb, label_selector="tier=w"))
            await until(lambda: "worker-1" in hosts.read_text(), "worker-1 published")
            await until(
                lambda: daemon.dump({}).get("cluster_view", {}).get("listed") is True,
                "cluster view listed",
            )
            await asyncio.sleep(0.3)  # a few coalescing windows: a late publication is done
            lines = hosts.read_text().splitlines()
            assert not [line for line in lines if "controller-0" in line]
            assert WORKER_LINE in lines
            leaked = [text for text in published if "controller-0" in text]
            assert not leaked, f"controller-0 was published: {leaked[0]}"
        finally:
            daemon.stop()
            await asyncio.wait_for(task, CEILING)
        assert daemon.failed_task is None


class SlowView:
    """The real cluster view source; the first one's restarts and every later one's start wait
    for `gate`: the view is slow to reach the new cluster (a loaded API server, a slow LIST)."""

    def __init__(self, inner: clusterview.SourceTask, gate: asyncio.Event, first: bool) -> None:
        self.inner, self.gate, self.first = inner, gate, first

    async def run(self) -> None:
        if not self.first:
            await self.gate.wait()
        await self.inner.run()

    def restart(self) -> None:
        async def later() -> None:
            await self.gate.wait()
            self.inner.restart()

        RESTARTS.add(asyncio.get_running_loop().create_task(later()))


RESTARTS: set[asyncio.Task[None]] = set()


async def test_nothing_is_published_from_the_old_clusters_view(tmp_path: Path) -> None:
    """Until the view has listed the new cluster, the old one's `hidden` is not the truth:
    the selected Nodes of the new cluster wait for it, whichever LIST comes first."""
    with FakeApiServer() as a, FakeApiServer() as b:
        a.add_object("nodes", make_node("worker-a", addresses=["10.240.0.50"], labels={"r": "w"}))
        b.add_object(
            "nodes", make_node("controller-0", addresses=["10.240.1.10"], labels={"tier": "c"})
        )
        b.add_object(
            "nodes",
            make_node(
                "worker-1",
                addresses=["10.240.1.101"],
                hostname="controller-0",
                labels={"tier": "w"},
            ),
        )
        hosts = tmp_path / "nodes.hosts"
        settings = Settings(
            kubeconfig=a.write_kubeconfig(tmp_path / "a.kubeconfig"),
            hosts_file=hosts,
            state_dir=None,
            control_socket=None,
            label_selector="r=w",
        )
        gate = asyncio.Event()
        build = clusterview.cluster_source
        daemon = Daemon(
            settings,
            cluster_factory=lambda d, generation: SlowView(
                build(d, generation), gate, generation == 1
            ),
        )
        published: list[str] = []

        def observe(event: str, status: Status) -> None:
            if event == "published":
                published.append(render_hosts(status.records))

        daemon.observe(observe)
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.board.ready.wait(), CEILING)
            kb = b.write_kubeconfig(tmp_path / "b.kubeconfig")
            await daemon.apply_settings(replace(settings, kubeconfig=kb, label_selector="tier=w"))
            await until(lambda: set(daemon.publisher.nodes) == {"worker-1"}, "LIST of B's Nodes")
            await asyncio.sleep(0.3)  # a few coalescing windows: a publication would be done
            assert "worker-1" not in hosts.read_text()
            assert not [text for text in published if "controller-0" in text]

            gate.set()
            await until(lambda: "worker-1" in hosts.read_text(), "worker-1 published")
            assert WORKER_LINE in hosts.read_text().splitlines()
            assert not [text for text in published if "controller-0" in text]
        finally:
            daemon.stop()
            await asyncio.wait_for(task, CEILING)
            for restart in RESTARTS:
                restart.cancel()
        assert daemon.failed_task is None
