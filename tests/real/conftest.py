"""Fixtures (fixtures only) of the real_cluster tests: one real control plane per session, with
the lab's bootstrap token and node RBAC add-ons and nodehosts' deploy/rbac*.yaml applied by the
real kubectl, and nodehosts running with the lab's rendered config and kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.controlplane import ControlPlane, render_lab
from tests.helpers.upstream import REPO, upstream_binary

# What the lab applies (provisioning/scripts/addons.sh) that these tests need: the bootstrap
# token Secret and the TLS bootstrapping bindings; then nodehosts' own RBAC as the package
# documents it. (addons/02-nodehosts-rbac.yaml holds the same ClusterRole as rbac-csr.yaml.)
LAB_ADDONS = ("00-bootstrap-token.yaml", "01-node-rbac.yaml")
NODEHOSTS_RBAC = (REPO / "deploy" / "rbac.yaml", REPO / "deploy" / "rbac-csr.yaml")


@pytest.fixture(scope="session")
def rendered_lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for name in ("etcd", "kube-apiserver", "kubectl"):
        upstream_binary(name)  # fail (CI) or skip (locally) before rendering anything
    return render_lab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def control_plane(
    rendered_lab: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    with ControlPlane(rendered_lab, tmp_path_factory.mktemp("control-plane")) as plane:
        for path in [rendered_lab / "addons" / name for name in LAB_ADDONS] + list(NODEHOSTS_RBAC):
            applied = plane.kubectl("apply", "-f", str(path))
            assert applied.returncode == 0, f"kubectl apply -f {path}: {applied.stderr}"
        yield plane
