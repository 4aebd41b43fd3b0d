"""nodehosts with the lab's config, kubeconfig and RBAC against the real control plane: Nodes
registered and updated with kubelet credentials (the Node authorizer and NodeRestriction) show
up in the hosts file and over DNS; heartbeats rewrite nothing; the watch gets real bookmarks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.controlplane import ControlPlane
from tests.helpers.kubelet import address_patch, heartbeat_patch, node_object
from tests.helpers.labdaemon import LabDaemon, start_lab_daemon
from tests.helpers.polling import wait_until

pytestmark = pytest.mark.real_cluster

NODES = "/api/v1/nodes"


@pytest.fixture(scope="module")
def quiet(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabDaemon]:
    """nodehosts watching a label no Node has: its watch gets no events, only bookmarks. It
    starts with the module's first daemon test, so its first bookmark (about a minute into a
    watch) is due by the time the last test looks."""
    with start_lab_daemon(
        control_plane,
        tmp_path_factory.mktemp("quiet"),
        "--label-selector",
        "lab.example/pool=none",
    ) as quiet:
        wait_until(lambda: quiet.events_named("ready"), timeout=60, what="quiet daemon ready")
        yield quiet


@pytest.fixture(scope="module")
def daemon(
    control_plane: ControlPlane, quiet: LabDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabDaemon]:
    with start_lab_daemon(control_plane, tmp_path_factory.mktemp("nodehosts")) as daemon:
        wait_until(
            lambda: daemon.events_named("ready"), timeout=60, what=f"ready\n{daemon.log_text()}"
        )
        yield daemon
    assert daemon.process.returncode is not None


def join(plane: ControlPlane, name: str, address: str, **labels: str) -> None:
    """Node NAME registers itself, as its kubelet does."""
    plane.node_client(name).post(NODES, node_object(name, address, labels=labels)).ok()


def published(daemon: LabDaemon, name: str, addresses: list[str]) -> None:
    wait_until(
        lambda: daemon.hosts().get(name),
        until=lambda got: got == addresses,
        timeout=20,
        what=f"{name} -> {addresses} in the hosts file",
    )
    assert daemon.dig(name) == addresses
    assert daemon.dig(f"{name}.node.internal") == addresses


def test_the_lab_flags_start_with_the_pinned_binaries(control_plane: ControlPlane) -> None:
    for component in control_plane.manifests:
        manifest, running = control_plane.flag_names(component)
        assert running[: len(manifest)] == manifest
        assert set(running[len(manifest) :]) == ControlPlane.ADDED_FLAGS[component]
    readyz = control_plane.readyz()
    assert "[+]etcd ok" in readyz
    assert "readyz check passed" in readyz


def test_join_dhcp_change_and_delete(control_plane: ControlPlane, daemon: LabDaemon) -> None:
    join(control_plane, "worker-0", "10.240.0.101")
    published(daemon, "worker-0", ["10.240.0.101"])
    assert daemon.hosts()["lb-0"] == ["10.240.0.40"]  # the lab's static host beside the nodes

    kubelet = control_plane.node_client("worker-0")
    kubelet.patch(f"{NODES}/worker-0/status", address_patch("10.240.0.150", "worker-0")).ok()
    published(daemon, "worker-0", ["10.240.0.150"])

    control_plane.admin.delete(f"{NODES}/worker-0").ok()
    wait_until(lambda: "worker-0" not in daemon.hosts(), timeout=20, what="worker-0 removed")
    assert daemon.dig("worker-0") == []


def test_node_restriction_applies_to_the_node_credentials(control_plane: ControlPlane) -> None:
    join(control_plane, "worker-1", "10.240.0.102")
    other = control_plane.node_client("worker-2")
    denied = other.patch(f"{NODES}/worker-1/status", address_patch("10.240.0.102", "worker-1"))
    assert denied.status == 403, denied.body
    control_plane.admin.delete(f"{NODES}/worker-1").ok()


def test_heartbeats_rewrite_nothing(control_plane: ControlPlane, daemon: LabDaemon) -> None:
    join(control_plane, "worker-3", "10.240.0.103")
    published(daemon, "worker-3", ["10.240.0.103"])
    before = daemon.dump()
    mtime = daemon.hosts_file.stat().st_mtime_ns
    writes = len(daemon.events_named("hosts_file_written"))

    kubelet = control_plane.node_client("worker-3")
    for _ in range(5):
        kubelet.patch(f"{NODES}/worker-3/status", heartbeat_patch()).ok()
    # One watch stream delivers events in order: once a later join is published, the
    # heartbeats before it have been handled.
    join(control_plane, "worker-4", "10.240.0.104")
    published(daemon, "worker-4", ["10.240.0.104"])

    after = daemon.dump()
    assert after["generation"] == before["generation"] + 1
    assert len(daemon.events_named("hosts_file_written")) == writes + 1
    assert daemon.hosts_file.stat().st_mtime_ns > mtime  # the join's write, and only it
    for name in ("worker-3", "worker-4"):
        control_plane.admin.delete(f"{NODES}/{name}").ok()


def test_label_selector_follows_label_changes(control_plane: ControlPlane, tmp_path: Path) -> None:
    join(control_plane, "worker-5", "10.240.0.105", **{"lab.example/pool": "blue"})
    join(control_plane, "worker-6", "10.240.0.106", **{"lab.example/pool": "green"})
    with start_lab_daemon(
        control_plane, tmp_path, "--label-selector", "lab.example/pool=blue"
    ) as selective:
        published(selective, "worker-5", ["10.240.0.105"])
        assert "worker-6" not in selective.hosts()
        # A kubelet may change its own labels outside the kubernetes.io namespaces.
        control_plane.node_client("worker-6").patch(
            f"{NODES}/worker-6", {"metadata": {"labels": {"lab.example/pool": "blue"}}}
        ).ok()
        published(selective, "worker-6", ["10.240.0.106"])
        control_plane.node_client("worker-5").patch(
            f"{NODES}/worker-5", {"metadata": {"labels": {"lab.example/pool": "green"}}}
        ).ok()
        wait_until(lambda: "worker-5" not in selective.hosts(), timeout=20, what="worker-5 gone")
    for name in ("worker-5", "worker-6"):
        control_plane.admin.delete(f"{NODES}/{name}").ok()


def test_the_watch_gets_bookmarks_that_advance_without_node_changes(
    control_plane: ControlPlane, quiet: LabDaemon
) -> None:
    """nodehosts asks for bookmarks; the apiserver sends one about every minute per watch,
    carrying its watch cache's version: writes elsewhere (a ConfigMap; Nodes outside the
    selector) move the daemon's version on although nothing it watches changed."""
    (synced,) = quiet.events_named("nodes_synced")
    listed = int(synced["resource_version"])
    other = control_plane.admin.post(
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"generateName": "bookmark-"}, "data": {}},
    ).ok()
    other_version = int(other["metadata"]["resourceVersion"])
    assert other_version > listed
    # A consistent LIST makes the Node watch cache catch up with etcd (a progress request).
    control_plane.admin.get(NODES, limit="1").ok()

    def bookmarks() -> list[int]:
        return [
            int(e["resource_version"])
            for e in quiet.events_named("watch_bookmark")
            if e["path"] == NODES
        ]

    seen = wait_until(
        bookmarks,
        until=lambda versions: any(v >= other_version for v in versions),
        timeout=150,
        interval=1,
        what="a bookmark past the ConfigMap's version",
    )
    assert min(seen) > listed
    report = quiet.dump()
    assert int(report["resource_version"]) == listed  # no Node it watches changed
    assert quiet.hosts() == {"lb-0": ["10.240.0.40"]}
    assert not quiet.events_named("relisting")
