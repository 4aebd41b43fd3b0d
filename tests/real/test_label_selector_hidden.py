"""With `--label-selector`, a Node outside the selection still holds its name (issue 12): the
real kube-apiserver, Nodes registered with their own kubelet credentials, nodehosts with the
lab's config and RBAC, its hosts file and DNS."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.controlplane import ControlPlane
from tests.helpers.kubelet import node_object
from tests.helpers.labdaemon import start_lab_daemon
from tests.helpers.polling import wait_until

pytestmark = pytest.mark.real_cluster

NODES = "/api/v1/nodes"
POOL = "lab.example/pool"


def test_a_selected_kubelet_cannot_take_an_unselected_nodes_name_as_its_alias(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    controller = node_object("controller-7", "10.240.0.17", labels={POOL: "control"})
    control_plane.node_client("controller-7").post(NODES, controller).ok()
    # worker-7's kubelet registers with controller-7's name as its Hostname.
    worker = node_object("worker-7", "10.240.0.107", labels={POOL: "work"})
    worker["status"]["addresses"][1]["address"] = "controller-7"
    control_plane.node_client("worker-7").post(NODES, worker).ok()
    try:
        with start_lab_daemon(control_plane, tmp_path, "--label-selector", f"{POOL}=work") as d:
            wait_until(
                lambda: d.hosts().get("worker-7"),
                until=lambda got: got == ["10.240.0.107"],
                timeout=60,
                what=f"worker-7 in the hosts file\n{d.log_text()}",
            )
            assert "controller-7" not in d.hosts()
            assert d.dig("controller-7") == []
            assert d.dig("worker-7") == ["10.240.0.107"]
            nodes = {entry["name"]: entry for entry in d.dump()["nodes"]}
            assert "'controller-7' (outside the label selector)" in nodes["worker-7"]["reason"]

            # controller-7 leaves the cluster: the alias is nobody else's any more.
            control_plane.admin.delete(f"{NODES}/controller-7").ok()
            wait_until(
                lambda: d.hosts().get("controller-7"),
                until=lambda got: got == ["10.240.0.107"],
                timeout=30,
                what=f"worker-7's alias published\n{d.log_text()}",
            )
            assert d.dig("controller-7") == ["10.240.0.107"]
    finally:
        for name in ("controller-7", "worker-7"):
            control_plane.admin.delete(f"{NODES}/{name}")
