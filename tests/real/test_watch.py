"""nodehosts' list/watch loop against the real apiserver and etcd: paging through 1000+ Nodes,
a 410 after compaction and a forced watch restart (relist), and apiserver and etcd restarts
survived with the last records kept and later changes published. These restart the shared
control plane's components (each waits until it is ready again), so they run last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.controlplane import ControlPlane
from tests.helpers.kubelet import node_object
from tests.helpers.labdaemon import LabDaemon, start_lab_daemon
from tests.helpers.polling import wait_until

pytestmark = pytest.mark.real_cluster

NODES = "/api/v1/nodes"
BULK = 1100


@pytest.fixture(scope="module")
def daemon(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabDaemon]:
    with start_lab_daemon(control_plane, tmp_path_factory.mktemp("watcher")) as daemon:
        wait_until(lambda: daemon.events_named("ready"), timeout=60, what="ready")
        yield daemon


def join(plane: ControlPlane, name: str, address: str) -> None:
    plane.node_client(name).post(NODES, node_object(name, address)).ok()


def wait_published(daemon: LabDaemon, name: str, address: str, timeout: float = 60) -> None:
    wait_until(
        lambda: daemon.hosts().get(name),
        until=lambda got: got == [address],
        timeout=timeout,
        interval=0.2,
        what=f"{name} -> {address}",
    )
    assert daemon.dig(name) == [address]


def test_a_list_of_1000_plus_nodes_is_paged(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    names = [f"bulk-{i:04d}" for i in range(BULK)]
    control_plane.admin.create_many(
        NODES,
        [
            node_object(name, f"10.242.{i // 250}.{i % 250 + 1}", labels={"bulk": "yes"})
            for i, name in enumerate(names)
        ],
    )
    try:
        with start_lab_daemon(control_plane, tmp_path_factory.mktemp("bulk")) as daemon:
            hosts = wait_until(
                daemon.hosts,
                until=lambda h: all(name in h for name in names),
                timeout=120,
                interval=0.5,
                what=f"{BULK} bulk nodes published",
            )
            (listed,) = [e for e in daemon.events_named("list_complete") if e["path"] == NODES]
            assert listed["pages"] >= 3  # limit=500: continue tokens across 1100+ Nodes
            assert listed["objects"] >= BULK
            assert hosts["bulk-1099"] == ["10.242.4.100"]
            assert daemon.dig("bulk-0777") == ["10.242.3.28"]
    finally:
        control_plane.admin.delete(NODES, labelSelector="bulk=yes").ok()


def test_compaction_and_a_forced_watch_restart_relist(
    control_plane: ControlPlane, daemon: LabDaemon
) -> None:
    join(control_plane, "worker-20", "10.240.0.120")
    wait_published(daemon, "worker-20", "10.240.0.120")
    relists = daemon.metric("nodehosts_watch_restarts_total", reason="relist")
    control_plane.compact()
    # The apiserver restart ends the watch; the new watch cache starts after the daemon's
    # version, and etcd has compacted it away: the resumed watch gets 410.
    control_plane.kill("kube-apiserver")
    assert daemon.dig("worker-20") == ["10.240.0.120"]  # served while the API is down
    control_plane.restart("kube-apiserver")

    def relisted() -> list[dict[str, object]]:
        return [e for e in daemon.events_named("relisting") if e["path"] == NODES]

    wait_until(relisted, timeout=90, interval=0.5, what="the Node source relisting after 410")
    (relisting,) = relisted()
    assert relisting["reason"] == "expired"
    assert "too old" in relisting["message"] or "410" in relisting["message"]
    wait_until(
        lambda: daemon.metric("nodehosts_watch_restarts_total", reason="relist"),
        until=lambda value: value == relists + 1,
        timeout=30,
        what="one relist counted",
    )
    assert daemon.hosts()["worker-20"] == ["10.240.0.120"]  # kept throughout
    join(control_plane, "worker-21", "10.240.0.121")
    wait_published(daemon, "worker-21", "10.240.0.121")


def test_an_etcd_restart_is_survived(control_plane: ControlPlane, daemon: LabDaemon) -> None:
    join(control_plane, "worker-22", "10.240.0.122")
    wait_published(daemon, "worker-22", "10.240.0.122")
    control_plane.kill("etcd")
    assert daemon.dig("worker-22") == ["10.240.0.122"]
    assert daemon.hosts()["worker-22"] == ["10.240.0.122"]
    control_plane.restart("etcd")
    join_when_writable(control_plane, "worker-23", "10.240.0.123")
    wait_published(daemon, "worker-23", "10.240.0.123", timeout=90)
    assert daemon.hosts()["worker-22"] == ["10.240.0.122"]
    assert daemon.process.poll() is None


def join_when_writable(plane: ControlPlane, name: str, address: str) -> None:
    """The apiserver answers writes again a moment after etcd is back."""
    kubelet = plane.node_client(name)
    wait_until(
        lambda: kubelet.post(NODES, node_object(name, address)).status,
        until=lambda status: status in (201, 409),
        timeout=60,
        interval=0.5,
        what=f"{name} registered after the etcd restart",
    )
