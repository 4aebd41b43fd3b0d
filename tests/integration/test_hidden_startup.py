"""With `--label-selector`, nothing is published before the view of every Node is listed.

The real Daemon in this process against the fake API server over real HTTP. The cluster
view's start is held back (its real source runs once a gate opens): the selected Nodes are
listed meanwhile, and a publication then would give worker-1 the alias `controller-0`, the
name of a Node outside the selection (issue 12). No stand-in for our own I/O: the gate only
delays the real source.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nodehosts.app import clusterview
from nodehosts.app.daemon import Daemon
from nodehosts.config import Settings
from nodehosts.core.status import systemd_status
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.polling import CEILING, until

CONTROLLER = make_node("controller-0", addresses=["10.240.0.10"], labels={"role": "controller"})
WORKER = make_node(
    "worker-1", addresses=["10.240.0.101"], hostname="controller-0", labels={"role": "worker"}
)
WORKER_LINE = "10.240.0.101 worker-1.node.internal worker-1"


class GatedSource:
    """The real cluster view source, started once `gate` is set."""

    def __init__(self, inner: clusterview.SourceTask, gate: asyncio.Event) -> None:
        self.inner, self.gate = inner, gate

    async def run(self) -> None:
        await self.gate.wait()
        await self.inner.run()

    def restart(self) -> None:
        self.inner.restart()


@pytest.mark.parametrize("approver", [False, True], ids=["names-only", "with-approver"])
async def test_nothing_is_published_before_every_node_is_listed(
    tmp_path: Path, approver: bool
) -> None:
    with FakeApiServer() as api:
        api.add_object("nodes", CONTROLLER)
        api.add_object("nodes", WORKER)
        if approver:
            from nodehosts.testing import fake_csr

            fake_csr.install(api)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        hosts = tmp_path / "nodes.hosts"
        gate = asyncio.Event()
        build = clusterview.cluster_source
        daemon = Daemon(
            Settings(
                kubeconfig=kubeconfig,
                hosts_file=hosts,
                state_dir=None,
                control_socket=None,
                label_selector="role=worker",
                approve_serving_csrs=approver,
            ),
            cluster_factory=lambda d, generation: GatedSource(build(d, generation), gate),
        )
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.status.synced, "LIST of the selected Nodes")
            await asyncio.sleep(0.5)  # ten coalescing windows: a publication would be done
            assert not hosts.exists()
            assert not daemon.status.ready
            assert daemon.status.generation == 0
            assert daemon.dump({})["cluster_view"] == {"listed": False, "last_error": None}
            # What systemctl status and /readyz say names the cause.
            waiting = "waiting for the list of every Node (label selector)"
            assert systemd_status(daemon.status) == waiting
            assert tuple(daemon.readiness()) == (False, waiting)

            gate.set()
            await asyncio.wait_for(daemon.board.ready.wait(), CEILING)
            lines = hosts.read_text().splitlines()
            assert WORKER_LINE in lines
            assert not [line for line in lines if "controller-0" in line]
            assert daemon.dump({})["cluster_view"]["listed"] is True
            if approver:
                assert daemon.approver is not None
                assert daemon.approver.report()["cluster_watch"] is True
        finally:
            daemon.stop()
            await asyncio.wait_for(task, CEILING)
        assert daemon.failed_task is None
