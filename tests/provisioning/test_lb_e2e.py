"""provisioning/scripts/lb.sh for real, in a booted Debian bookworm container (the lab's box),
against a fake API server on the host's loopback: first in DNS_MODE=nodehosts (Debian packages
only), then switched to the default DNS_MODE=coredns, where the real CoreDNS (the binary
scripts/upstream-bin built, installed through LAB_BINARIES instead of a download) runs with the
lab's unit and Corefile and answers from the hosts file nodehosts writes.

Uses the packaging test's harness (tests/e2e/nspawn.py: systemd-nspawn on an overlay of a
cached root, sharing the host's network) and builds the .deb with tests/e2e/build-deb.sh.
Every address lb.sh uses is put on loopback: haproxy's backends are 127.0.0.10-12 (nothing
listens there), nodehosts answers DNS on 127.0.0.154:53, no upstream resolver. In CoreDNS mode
CoreDNS binds 127.0.0.153:53 only (COREDNS_LISTEN) and forwards to a dnsmasq stand-in upstream
on the host at 127.0.0.155:53. Run it under `flock /tmp/nodehosts-e2e.lock`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import DEFAULTS, PROVISIONING, REPO

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

    def dig(self, name: str, *, server: str = DNS, qtype: str = "A") -> str:
        result = self.container.run(
            "dig",
            f"@{server}",
            "+short",
            "+time=2",
            "+tries=1",
            name,
            qtype,
            check=False,
            timeout=15,
        )
        return result.stdout.strip()

    def status(self, name: str, *, server: str) -> str:
        """The rcode of one query (NOERROR, NXDOMAIN, ...), or dig's error output."""
        result = self.container.run(
            "dig", f"@{server}", "+time=2", "+tries=1", name, check=False, timeout=15
        )
        match = re.search(r"status: (\w+)", result.stdout)
        return match[1] if match else result.stdout + result.stderr


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


# --- the default DNS path: the same LB switched to DNS_MODE=coredns (after the tests above)

COREDNS_DNS = "127.0.0.153"
UPSTREAM_DNS = "127.0.0.155"
COREDNS_ENV = {
    **LB_ENV,
    "DNS_MODE": "coredns",
    "LAB_BINARIES": "/opt/lab/bin",
    "COREDNS_LISTEN": COREDNS_DNS,
    "UPSTREAM_DNS": UPSTREAM_DNS,
}


@pytest.fixture(scope="module")
def stand_in_upstream() -> Iterator[None]:
    """dnsmasq on the host's UPSTREAM_DNS:53 (the container shares the host's network):
    upstream.example is 192.0.2.7, the rest of `internal` is NXDOMAIN, like a public resolver."""
    from tests.helpers.dnsmasq import DNSMASQ

    process = subprocess.Popen(
        [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            f"--listen-address={UPSTREAM_DNS}",
            "--bind-interfaces",
            "--user=root",
            "--log-facility=-",
            "--host-record=upstream.example,192.0.2.7",
            "--local=/internal/",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            probe = subprocess.run(
                ["dig", f"@{UPSTREAM_DNS}", "+short", "+time=1", "+tries=1", "upstream.example"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.stdout.strip() == "192.0.2.7":
                break
        else:
            process.kill()
            pytest.fail(f"dnsmasq on {UPSTREAM_DNS}:53 did not start: {process.communicate()[1]}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def coredns_lb(lb: LB, stand_in_upstream: None) -> tuple[LB, subprocess.CompletedProcess[str]]:
    """lb.sh run again with DNS_MODE=coredns, CoreDNS from LAB_BINARIES (the built binary)."""
    from tests.helpers.upstream import upstream_binary

    binaries = lb.container.path("/opt/lab/bin")
    binaries.mkdir(parents=True, exist_ok=True)
    shutil.copy(upstream_binary("coredns"), binaries / "coredns")
    run = lb.container.run(
        "bash", "/opt/lab/provisioning/scripts/lb.sh", env=COREDNS_ENV, check=False, timeout=900
    )
    return lb, run


def test_coredns_mode_installs_the_built_binary_without_downloading(
    coredns_lb: tuple[LB, subprocess.CompletedProcess[str]],
) -> None:
    from tests.helpers.upstream import upstream_binary

    lb, run = coredns_lb
    assert run.returncode == 0, run.stdout + run.stderr + "\n" + lb.diagnostics()
    assert "LB lb-0 done" in run.stderr
    assert "downloading" not in run.stderr
    assert "no DNS answer" not in run.stderr, run.stderr
    installed = lb.container.path("/usr/local/bin/coredns").read_bytes()
    assert installed == upstream_binary("coredns").read_bytes()
    version = lb.container.run("/usr/local/bin/coredns", "-version").stdout
    assert f"CoreDNS-{DEFAULTS['COREDNS_VERSION']}" in version


def test_coredns_runs_the_labs_unit_and_corefile(
    coredns_lb: tuple[LB, subprocess.CompletedProcess[str]],
) -> None:
    lb, _ = coredns_lb
    for name in ("Corefile", "coredns.service"):
        inside = "/etc/coredns/Corefile" if name == "Corefile" else f"/etc/systemd/system/{name}"
        assert lb.container.path(inside).read_bytes() == (REPO / "coredns" / name).read_bytes()
    active = lb.container.run("systemctl", "is-active", "coredns", check=False).stdout.strip()
    assert active == "active", lb.container.run(
        "journalctl", "-u", "coredns", "--no-pager", check=False
    ).stdout
    # The unit's DynamicUser, not root.
    user = lb.container.run("ps", "-o", "user=", "-C", "coredns", check=False).stdout.split()
    assert user and "root" not in user


def test_coredns_answers_from_the_file_nodehosts_writes(
    coredns_lb: tuple[LB, subprocess.CompletedProcess[str]],
) -> None:
    """FQDN and bare names of every Node, a Node that joins, forwarding, NXDOMAIN; and nodehosts
    no longer answers DNS itself."""
    from nodehosts.testing.fake_apiserver import make_node

    lb, _ = coredns_lb
    for name, address in NODES.items():
        assert lb.dig(f"{name}.node.internal", server=COREDNS_DNS) == address, lb.diagnostics()
        assert lb.dig(name, server=COREDNS_DNS) == address

    lb.api.add_object("nodes", make_node("worker-8", addresses=["10.240.0.188"]))
    deadline = time.monotonic() + 60
    while lb.dig("worker-8", server=COREDNS_DNS) != "10.240.0.188" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lb.dig("worker-8.node.internal", server=COREDNS_DNS) == "10.240.0.188"

    assert lb.dig("upstream.example", server=COREDNS_DNS) == "192.0.2.7"
    assert lb.status("worker-404.node.internal", server=COREDNS_DNS) == "NXDOMAIN"
    assert lb.dig("worker-0", server=COREDNS_DNS, qtype="TXT") == ""
    # nodehosts was restarted (without waiting) with a config that serves no DNS: its old
    # address stops answering. (lb.sh used to miss that its config had changed: //etc paths.)
    deadline = time.monotonic() + 30
    while re.fullmatch(r"[A-Z]+", lb.status("worker-0", server=DNS)):
        assert time.monotonic() < deadline, lb.container.path(
            "/etc/nodehosts/config.toml"
        ).read_text()
        time.sleep(0.5)


NODE_BINARIES = (
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "crictl",
    "kubelet",
    "kubectl",
    "cni/bridge",
    "cni/host-local",
    "cni/loopback",
    "cni/portmap",
)


def test_lab_binaries_installs_a_nodes_runtime_and_kubelet(
    coredns_lb: tuple[LB, subprocess.CompletedProcess[str]],
) -> None:
    """The functions node.sh calls, with LAB_BINARIES: the built binaries land where the units
    look for them, nothing is downloaded; without one of them the install stops naming it."""
    from tests.helpers.upstream import upstream_binary

    lb, _ = coredns_lb
    binaries = lb.container.path("/opt/lab/node-bin")
    for name in NODE_BINARIES:
        (binaries / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(upstream_binary(name), binaries / name)
    install = (
        "source /opt/lab/provisioning/lib/all.sh && lab_load_env && install_container_runtime"
        " && install_kube_binary kubelet && install_kube_binary kubectl"
    )
    env = {"LAB_BINARIES": "/opt/lab/node-bin"}
    run = lb.container.run("bash", "-c", install, env=env, check=False, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "downloading" not in run.stderr

    def version(*command: str) -> str:
        return lb.container.run(*command, check=False).stdout

    containerd = version("/usr/local/bin/containerd", "--version").split()
    assert f"v{DEFAULTS['CONTAINERD_VERSION']}" in containerd
    assert DEFAULTS["RUNC_VERSION"] in version("/usr/local/sbin/runc", "--version")
    assert DEFAULTS["CRICTL_VERSION"] in version("/usr/local/bin/crictl", "--version")
    assert DEFAULTS["KUBERNETES_VERSION"] in version("/usr/local/bin/kubelet", "--version")
    for name in ("ctr", "containerd-shim-runc-v2", "kubectl"):
        assert (
            lb.container.path(f"/usr/local/bin/{name}").read_bytes()
            == (binaries / name).read_bytes()
        )
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        assert (
            lb.container.path(f"/opt/cni/bin/{plugin}").read_bytes()
            == (binaries / "cni" / plugin).read_bytes()
        )

    (binaries / "runc").unlink()
    run = lb.container.run("bash", "-c", install, env=env, check=False, timeout=300)
    assert run.returncode != 0
    assert "LAB_BINARIES=/opt/lab/node-bin has no executable runc" in run.stderr
    assert "downloading" not in run.stderr
