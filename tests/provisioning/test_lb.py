"""The load balancer's files: CoreDNS reads exactly the file nodehosts writes, nodehosts
accepts its configuration, haproxy accepts its own, the units are valid, and both DNS modes and
the two-LB setup render as described."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import COREDNS, require_tool

pytestmark = pytest.mark.provisioning


def corefile_hosts(text: str) -> tuple[str, list[str], dict[str, list[str]]]:
    """The hosts plugin's FILE, ZONES and options from a Corefile."""
    match = re.search(r"^\s*hosts\s+(\S+)((?:\s+[^\s{]+)*)\s*\{(.*?)\}", text, re.M | re.S)
    assert match, "no hosts block"
    options = {}
    for line in match.group(3).splitlines():
        words = line.split("#")[0].split()
        if words:
            options[words[0]] = words[1:]
    return match.group(1), match.group(2).split(), options


def nodehosts_config(root: Path) -> dict:
    return tomllib.loads((root / "etc/nodehosts/config.toml").read_text())


def test_corefile_reads_the_file_nodehosts_writes(rendered: Path) -> None:
    """hosts FILE == nodehosts' [hosts] file, in the directory its unit makes readable."""
    root = rendered / "nodes/lb-0"
    path, zones, _ = corefile_hosts((root / "etc/coredns/Corefile").read_text())
    assert path == nodehosts_config(root)["hosts"]["file"] == "/var/lib/nodehosts/hosts/nodes.hosts"
    assert zones == ["."]  # FQDNs and bare names alike


def test_the_coredns_unit_as_systemd_sees_it(rendered: Path, tmp_path: Path) -> None:
    """systemd's own reading of the installed coredns.service: it starts CoreDNS on the
    Corefile lb.sh installed, with port 53 as its only privilege (exposure <= 2.0, like
    nodehosts' unit). What CoreDNS makes of the Corefile is tests/provisioning/test_lb_e2e.py's
    and the CoreDNS tests'."""
    analyze = require_tool("systemd-analyze")
    root = rendered / "nodes/lb-0"
    unit = (root / "etc/systemd/system/coredns.service").read_text()
    (exec_start,) = re.findall(r"(?m)^ExecStart=(\S+) -conf (\S+)$", unit)
    assert exec_start[0] == "/usr/local/bin/coredns"
    assert (root / exec_start[1].lstrip("/")).is_file(), f"{exec_start[1]} is not installed"
    local = tmp_path / "coredns.service"
    local.write_text(unit.replace(exec_start[0], "/bin/true"))
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(local)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for coredns\.service: ([\d.]+)", result.stdout)
    assert match, result.stdout[-800:] + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
    # Of the capability checks, only the networking one (port 53) is not passed.
    failed_caps = re.findall(r"(?m)^✗ (CapabilityBoundingSet=\S+)", result.stdout)
    assert failed_caps == ["CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)"]
    assert re.search(r"(?m)^✓ User=/DynamicUser=", result.stdout), "runs as root"
    assert (root / "etc/coredns/upstream.resolv.conf").read_text().splitlines()[1:] == [
        "nameserver 10.0.2.3"
    ]


def test_corefile_plugins() -> None:
    """ttl 30, a short reload, fallthrough, forward, cache, errors, health, ready, acl."""
    text = (COREDNS / "Corefile").read_text()
    _, _, options = corefile_hosts(text)
    assert options["ttl"] == ["30"]
    reload = options["reload"][0]
    assert reload.endswith("s") and 0 < float(reload[:-1]) <= 5
    assert options["fallthrough"] == []
    assert "fallthrough_unsupported" not in options  # node names' other types stay NODATA
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    for plugin in (
        "errors",
        "cache 30",
        "health 127.0.0.1:8080",
        "ready 127.0.0.1:8181",
        "loop",
        "forward . /etc/coredns/upstream.resolv.conf",
    ):
        assert re.search(rf"^\s*{re.escape(plugin)}\s*$", code, re.M), plugin
    assert re.search(r"allow net 10\.240\.0\.0/24 10\.200\.0\.0/16 127\.0\.0\.0/8", code)
    assert re.search(r"^\s*block\s*$", code, re.M)  # never an open resolver


def test_nodehosts_accepts_its_rendered_configuration(rendered: Path, tmp_path: Path) -> None:
    """`nodehosts check-config` on the file lb.sh writes (paths that exist only on the LB are
    pointed at temporary copies)."""
    root = rendered / "nodes/lb-0"
    hosts_dir = tmp_path / "hosts"
    hosts_dir.mkdir()
    static = tmp_path / "static-hosts"
    shutil.copy(root / "etc/nodehosts/static-hosts", static)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodehosts.cli",
            "check-config",
            "--config",
            str(root / "etc/nodehosts/config.toml"),
            "--kubeconfig",
            str(root / "etc/nodehosts/kubeconfig"),
            "--hosts-file",
            str(hosts_dir / "nodes.hosts"),
            "--static-hosts",
            str(static),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nodehosts_config_in_coredns_mode(rendered: Path) -> None:
    """CoreDNS owns :53; nodehosts approves serving CSRs, for node addresses only."""
    config = nodehosts_config(rendered / "nodes/lb-0")
    assert config["kubernetes"]["kubeconfig"] == "/etc/nodehosts/kubeconfig"
    assert config["records"]["domain"] == "node.internal"
    assert config["dns"]["listen"] == []
    assert config["csr"] == {"approve": True, "allowed_cidrs": ["10.240.0.0/24"]}
    static = (rendered / "nodes/lb-0/etc/nodehosts/static-hosts").read_text().splitlines()
    assert "10.240.0.40 lb-0" in static


def test_nodehosts_dns_mode_with_two_lbs(rendered_ha: Path) -> None:
    """DNS_MODE=nodehosts: nodehosts listens on the VIP, its own address and loopback, and
    recursion is for the lab's networks; no CoreDNS files; keepalived holds the VIP."""
    for i, own in enumerate(("10.240.0.41", "10.240.0.42")):
        root = rendered_ha / f"nodes/lb-{i}"
        dns = nodehosts_config(root)["dns"]
        assert dns["listen"] == ["10.240.0.40:53", f"{own}:53", "127.0.0.1:53"]
        assert dns["upstream"] == ["10.0.2.3"]
        assert dns["allow_recursion_from"] == [
            "10.240.0.0/24",
            "10.200.0.0/16",
            "127.0.0.0/8",
            "::1/128",
        ]
        assert not (root / "etc/coredns").exists()
        keepalived = (root / "etc/keepalived/keepalived.conf").read_text()
        assert "10.240.0.40/24 dev eth1" in keepalived
        assert f"unicast_src_ip {own}" in keepalived
        assert "systemctl is-active --quiet nodehosts" in keepalived
    static = (rendered_ha / "nodes/lb-0/etc/nodehosts/static-hosts").read_text().splitlines()
    assert {"10.240.0.40 lb", "10.240.0.41 lb-0", "10.240.0.42 lb-1"} <= set(static)
    prio = [
        int(
            re.search(
                r"priority (\d+)",
                (rendered_ha / f"nodes/lb-{i}/etc/keepalived/keepalived.conf").read_text(),
            ).group(1)
        )
        for i in (0, 1)
    ]
    assert prio[0] > prio[1]


def test_haproxy_accepts_its_configuration(rendered: Path, tmp_path: Path) -> None:
    """haproxy -c on the rendered haproxy.cfg (CA path pointed at the rendered CA)."""
    haproxy = require_tool("haproxy")
    root = rendered / "nodes/lb-0"
    cfg = (root / "etc/haproxy/haproxy.cfg").read_text()
    assert [
        line.split()[1:3] for line in cfg.splitlines() if line.strip().startswith("server ")
    ] == [
        ["controller-0", "10.240.0.10:6443"],
        ["controller-1", "10.240.0.11:6443"],
        ["controller-2", "10.240.0.12:6443"],
    ]
    local = tmp_path / "haproxy.cfg"
    local.write_text(
        cfg.replace("/etc/haproxy/kubernetes-ca.crt", str(root / "etc/haproxy/kubernetes-ca.crt"))
    )
    result = subprocess.run(
        [haproxy, "-c", "-f", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("machine", ["lb-0", "controller-0", "controller-2", "worker-0"])
def test_systemd_units_are_valid(rendered: Path, tmp_path: Path, machine: str) -> None:
    """systemd-analyze verify on a machine's units together (the binaries, absent here, are
    replaced by /bin/true)."""
    analyze = require_tool("systemd-analyze")
    units = sorted((rendered / f"nodes/{machine}/etc/systemd/system").glob("*.service"))
    assert units
    local = []
    for unit in units:
        text = re.sub(
            r"^(ExecStart=)/usr/local/bin/\S+", r"\1/bin/true", unit.read_text(), flags=re.M
        )
        (tmp_path / unit.name).write_text(text)
        local.append(str(tmp_path / unit.name))
    result = subprocess.run(
        [analyze, "verify", *local], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = [u.name for u in units]
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(n in line for n in names)
    ]
    assert not problems, problems
