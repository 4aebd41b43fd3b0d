"""provisioning/scripts/lb.sh for real, in a booted Debian bookworm container (the lab's box),
in DNS_MODE=nodehosts (Debian packages only), against a fake API server on the host's loopback.

Uses the packaging test's harness (tests/e2e/nspawn.py: systemd-nspawn on an overlay of a
cached root, sharing the host's network) and builds the .deb with tests/e2e/build-deb.sh.
Every address lb.sh uses is put on loopback: haproxy's backends are 127.0.0.10-12 (nothing
listens there), nodehosts answers DNS on 127.0.0.154:53, no upstream resolver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import PROVISIONING, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.provisioning]

E2E = REPO / "tests/e2e"
SUITE = "bookworm"
TOKEN = "lb-e2e-token-0123456789"
DNS = "127.0.0.154"
NODES = {"controller-0": "10.240.0.10", "worker-0": "10.240.0.101"}
LB_ENV = {
    "LAB_NODE": "lb-0",
    "LAB_BUNDLE": "/opt/lab/bundle",
    "NODEHOSTS_DEB": "/opt/lab/nodehosts.deb",
    "DNS_MODE": "nodehosts",
    "UPSTREAM_DNS": "none",
    "NODEHOSTS_DNS_LISTEN": f"{DNS}:53",
    "LB_SELF_RESOLVE": "no",
    "LB_VIP": DNS,
    "NODE_NET_PREFIX": "127.0.0",
    "NODE_CIDR": "127.0.0.0/8",
}


def needs() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root"]
    for tool in ("systemd-nspawn", "nsenter", "debootstrap", "dpkg-buildpackage", "lintian"):
        if shutil.which(tool) is None:
            missing.append(tool)
    return missing


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = needs()
    if missing:
        pytest.fail(f"the LB end-to-end test needs: {', '.join(missing)} (CI installs them)")
    result = subprocess.run(
        ["bash", str(E2E / "build-deb.sh"), str(tmp_path_factory.mktemp("lb-deb"))],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    from nodehosts.testing.fake_apiserver import FakeApiServer, make_node

    server = FakeApiServer(tokens=[TOKEN], tls=True)
    for name, address in NODES.items():
        server.add_object("nodes", make_node(name, addresses=[address]))
    with server:
        yield server


class LB:
    def __init__(self, container: Any, api: Any) -> None:
        self.container = container
        self.api = api
        self.first_run: subprocess.CompletedProcess[str] | None = None

    def diagnostics(self) -> str:
        return self.container.diagnostics()

    def lb_sh(self) -> subprocess.CompletedProcess[str]:
        return self.container.run(
            "bash", "/opt/lab/provisioning/scripts/lb.sh", env=LB_ENV, check=False, timeout=900
        )

    def dig(self, name: str) -> str:
        result = self.container.run(
            "dig", f"@{DNS}", "+short", "+time=2", "+tries=1", name, check=False, timeout=15
        )
        return result.stdout.strip()


@pytest.fixture(scope="module")
def lb(deb: Path, api: Any, rendered: Path) -> Iterator[LB]:
    sys.path.insert(0, str(E2E))
    from nspawn import Container, cached_root

    with Container(SUITE, cached_root(SUITE)) as container:
        container.run("chown", "-R", "_apt:root", "/var/cache/apt/archives/partial", check=False)
        container.path("/etc/dpkg/dpkg.cfg.d/e2e-unsafe-io").write_text("force-unsafe-io\n")
        # /tmp is a tmpfs inside: the files go to /opt/lab, laid out as the Vagrantfile does.
        lab = container.path("/opt/lab")
        ignore = shutil.ignore_patterns("generated", "__pycache__")
        shutil.copytree(PROVISIONING, lab / "provisioning", ignore=ignore)
        shutil.copytree(REPO / "coredns", lab / "coredns")
        shutil.copy(deb, lab / "nodehosts.deb")
        bundle = lab / "bundle"
        (bundle / "etc/nodehosts").mkdir(parents=True)
        (bundle / "etc/haproxy").mkdir(parents=True)
        api.write_kubeconfig(bundle / "etc/nodehosts/kubeconfig", token=TOKEN)
        shutil.copy(rendered / "pki/ca.crt", bundle / "etc/haproxy/kubernetes-ca.crt")
        box = LB(container, api)
        box.first_run = box.lb_sh()
        yield box


def test_lb_script_succeeds(lb: LB) -> None:
    """lb.sh installs haproxy and nodehosts from the archive and the .deb, and configures them."""
    assert lb.first_run is not None
    output = lb.first_run.stdout + lb.first_run.stderr
    assert lb.first_run.returncode == 0, output + "\n" + lb.diagnostics()
    assert "LB lb-0 done" in lb.first_run.stderr


def test_haproxy_config_passes_haproxy_c(lb: LB) -> None:
    """haproxy -c on the installed configuration; the service runs."""
    result = lb.container.run(
        "sh", "-c", "cd / && haproxy -c -f /etc/haproxy/haproxy.cfg", check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    backends = lb.container.path("/etc/haproxy/haproxy.cfg").read_text()
    assert "server controller-0 127.0.0.10:6443" in backends
    assert (
        lb.container.run("systemctl", "is-active", "haproxy", check=False).stdout.strip()
        == "active"
    )


def test_nodehosts_service_is_up(lb: LB) -> None:
    """nodehosts runs with lb.sh's configuration and the kubeconfig readable only by it."""

    def state() -> str:
        return lb.container.run("systemctl", "is-active", "nodehosts", check=False).stdout.strip()

    deadline = time.monotonic() + 30
    while state() != "active" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state() == "active", lb.diagnostics()
    mode = lb.container.run("stat", "-c", "%a %U:%G", "/etc/nodehosts/kubeconfig").stdout.split()
    assert mode == ["640", "root:nodehosts"]


def test_dig_answers_node_names_from_the_fake_api(lb: LB) -> None:
    """The FQDN and the bare name of every Node, within seconds of the service starting."""
    deadline = time.monotonic() + 30
    while lb.dig("worker-0.node.internal") != NODES["worker-0"] and time.monotonic() < deadline:
        time.sleep(0.5)
    for name, address in NODES.items():
        assert lb.dig(f"{name}.node.internal") == address, lb.diagnostics()
        assert lb.dig(name) == address


def test_a_new_node_is_answered(lb: LB) -> None:
    """A worker that joins (DHCP address) resolves without touching the LB."""
    from nodehosts.testing.fake_apiserver import make_node

    lb.api.add_object("nodes", make_node("worker-7", addresses=["10.240.0.177"]))
    deadline = time.monotonic() + 30
    while lb.dig("worker-7") != "10.240.0.177" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lb.dig("worker-7.node.internal") == "10.240.0.177"


def test_rerun_changes_nothing(lb: LB) -> None:
    """Running lb.sh again installs nothing, rewrites nothing, restarts nothing."""
    pid = lb.container.run("systemctl", "show", "-P", "MainPID", "nodehosts").stdout.strip()
    again = lb.lb_sh()
    assert again.returncode == 0, again.stderr
    assert "restarting" not in again.stderr
    assert "installing nodehosts" not in again.stderr
    assert lb.container.run("systemctl", "show", "-P", "MainPID", "nodehosts").stdout.strip() == pid
