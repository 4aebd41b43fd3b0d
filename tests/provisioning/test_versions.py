"""versions.env: the companion images are the ones kubeadm pins for the same Kubernetes release,
read from kubeadm's own source (cmd/kubeadm/app/constants/constants.go of k8s.io/kubernetes at
KUBERNETES_VERSION, fetched by the Go module proxy into the module cache), and every pin says
where it comes from."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DEFAULTS, PROVISIONING

pytestmark = pytest.mark.provisioning


@pytest.fixture(scope="module")
def kubeadm_constants() -> str:
    go = shutil.which("go")
    if go is None:
        message = "go is not installed (it reads kubeadm's pins from the k8s.io/kubernetes module)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    module = f"k8s.io/kubernetes@{DEFAULTS['KUBERNETES_VERSION']}"
    result = subprocess.run(
        [go, "mod", "download", "-json", module],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    directory = Path(json.loads(result.stdout)["Dir"])
    return (directory / "cmd/kubeadm/app/constants/constants.go").read_text()


def constant(source: str, name: str) -> str:
    match = re.search(rf'^\s*{name}\s*=\s*"([^"]+)"', source, re.M)
    assert match, f"no {name} in kubeadm's constants.go"
    return match.group(1)


def test_companion_images_are_kubeadms_for_this_release(kubeadm_constants: str) -> None:
    """etcd, pause and the cluster's CoreDNS: kubeadm's DefaultEtcdVersion, PauseVersion and
    CoreDNSVersion at KUBERNETES_VERSION."""
    assert DEFAULTS["ETCD_IMAGE"] == (
        "registry.k8s.io/etcd:" + constant(kubeadm_constants, "DefaultEtcdVersion")
    )
    assert DEFAULTS["PAUSE_IMAGE"] == (
        "registry.k8s.io/pause:" + constant(kubeadm_constants, "PauseVersion")
    )
    assert DEFAULTS["CLUSTER_COREDNS_IMAGE"] == (
        "registry.k8s.io/coredns/coredns:" + constant(kubeadm_constants, "CoreDNSVersion")
    )


def test_every_pin_says_where_it_comes_from() -> None:
    """Each `: "${NAME:=...}"` line of versions.env sits under a comment (a pin may share the
    comment of the pin it goes with, like the Calico manifest's checksum with its version)."""
    lines = (PROVISIONING / "versions.env").read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.startswith(': "${'):
            continue
        above = i - 1
        while lines[above].startswith(': "${'):
            above -= 1
        assert lines[above].startswith("# "), f"no comment above: {line}"
