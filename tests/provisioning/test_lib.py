"""The shell library's functions, called from bash exactly as the scripts call them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import bash_lib

pytestmark = pytest.mark.provisioning


def run_ok(script: str, **env: str) -> str:
    result = bash_lib(script, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_machine_names_and_static_addresses() -> None:
    """lb-0 holds the VIP alone; controllers are .10+; etcd peers list every controller."""
    out = run_ok(
        'for n in $(lb_names) $(controller_names); do echo "$n $(node_ip "$n")"; done; '
        "worker_names; etcd_initial_cluster; etcd_servers"
    )
    assert out.splitlines() == [
        "lb-0 10.240.0.40",
        "controller-0 10.240.0.10",
        "controller-1 10.240.0.11",
        "controller-2 10.240.0.12",
        "worker-0",
        "worker-1",
        "worker-2",
        "controller-0=https://10.240.0.10:2380,controller-1=https://10.240.0.11:2380,"
        "controller-2=https://10.240.0.12:2380",
        "https://10.240.0.10:2379,https://10.240.0.11:2379,https://10.240.0.12:2379",
    ]


def test_two_lbs_get_own_addresses_and_workers_have_none() -> None:
    """With LB_COUNT=2 the VIP floats; asking for a worker's static address is an error."""
    assert run_ok("node_ip lb-0; node_ip lb-1", LB_COUNT="2").split() == [
        "10.240.0.41",
        "10.240.0.42",
    ]
    result = bash_lib("node_ip worker-0")
    assert result.returncode != 0
    assert "worker-0 has no static address" in result.stderr


def test_bad_settings_are_refused() -> None:
    """DNS_MODE and LB_COUNT are checked when the settings load."""
    assert "DNS_MODE must be" in bash_lib("true", DNS_MODE="bind").stderr
    assert "LB_COUNT must be 1 or 2" in bash_lib("true", LB_COUNT="3").stderr


def test_apiserver_certificate_covers_every_endpoint() -> None:
    """The LB VIP, the service IP, loopback, the controllers and kubernetes.default names."""
    sans = set(run_ok("apiserver_sans").split())
    assert {
        "IP:10.240.0.40",
        "IP:10.32.0.1",
        "IP:127.0.0.1",
        "IP:10.240.0.10",
        "IP:10.240.0.11",
        "IP:10.240.0.12",
        "DNS:controller-0",
        "DNS:controller-0.node.internal",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    } <= sans


def test_update_file_writes_only_changes(tmp_path: Path) -> None:
    """A second identical write changes nothing, so a re-run restarts nothing."""
    target = tmp_path / "etc/x.conf"
    out = run_ok(
        f'echo a | update_file "{target}" 0640; echo "1:${{#LAB_CHANGED[@]}}"; '
        f'echo a | update_file "{target}" 0640; echo "2:${{#LAB_CHANGED[@]}}"; '
        f'update_file "{target}" 0640 <<<b; echo "3:${{#LAB_CHANGED[@]}}"; '
        f'was_changed "{target}" && echo changed; was_changed /nope || echo unchanged'
    )
    # A pipe runs update_file in a subshell: only the here-string write is recorded.
    assert "3:1" in out
    assert "changed" in out and "unchanged" in out
    assert target.read_text() == "b\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert not list(target.parent.glob(".tmp.*"))


def test_a_file_rendered_under_root_slash_counts_as_changed(tmp_path: Path) -> None:
    """lb.sh renders into ROOT=/ ("$root/etc/x" is "//etc/x") and asks was_changed /etc/x:
    the same file, so the service restarts (a DNS_MODE switch must restart nodehosts)."""
    root = f"{tmp_path}/"
    out = run_ok(
        f'update_file "{root}/etc/x.conf" 0644 <<<new; '
        f'was_changed "{tmp_path}/etc/x.conf" && echo changed || echo unchanged'
    )
    assert out.strip() == "changed"


def test_update_file_keeps_an_unchanged_file_untouched(tmp_path: Path) -> None:
    """Same content and mode: the file is not replaced (its mtime stays)."""
    target = tmp_path / "same"
    target.write_text("x\n")
    target.chmod(0o644)
    os.utime(target, (1_000_000, 1_000_000))
    out = run_ok(f'update_file "{target}" 0644 <<<x; echo "n=${{#LAB_CHANGED[@]}}"')
    assert out.strip() == "n=0"
    assert target.stat().st_mtime == 1_000_000


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        ("a" * 64 + "\n", "kubelet", "a" * 64),  # dl.k8s.io: digest only
        (
            "b" * 64 + "  containerd-2.2.3-linux-amd64.tar.gz\n",
            "containerd-2.2.3-linux-amd64.tar.gz",
            "b" * 64,
        ),
        ("c" * 64 + "  runc.arm64\n" + "d" * 64 + " *runc.amd64\n", "runc.amd64", "d" * 64),
        (
            "e" * 64 + "  dist/coredns_1.14.7_linux_amd64.tgz\n",
            "coredns_1.14.7_linux_amd64.tgz",
            "e" * 64,
        ),
    ],
)
def test_checksum_for_reads_every_published_format(
    tmp_path: Path, content: str, name: str, expected: str
) -> None:
    """Bare digests and `digest  name` lists (with * and directories) both work."""
    sums = tmp_path / "sums"
    sums.write_text(content)
    assert run_ok(f'checksum_for "{sums}" "{name}"').strip() == expected


def test_checksum_for_refuses_a_file_without_the_name(tmp_path: Path) -> None:
    """A checksum list that does not mention the file is an error, not a pass."""
    sums = tmp_path / "sums"
    sums.write_text("f" * 64 + "  other.tar.gz\n")
    result = bash_lib(f'checksum_for "{sums}" runc.amd64')
    assert result.returncode != 0
    assert "no SHA-256 for runc.amd64" in result.stderr


def test_download_urls_follow_versions_env() -> None:
    """The URLs the machines download from carry the pinned versions."""
    out = run_ok(
        "lab_arch() { echo amd64; }; kube_binary_url kubelet; containerd_url; runc_url; "
        "cni_plugins_url; crictl_url; coredns_url; calico_manifest_url"
    ).split()
    assert out == [
        "https://dl.k8s.io/release/v1.36.4/bin/linux/amd64/kubelet",
        "https://github.com/containerd/containerd/releases/download/v2.2.3/containerd-2.2.3-linux-amd64.tar.gz",
        "https://github.com/opencontainers/runc/releases/download/v1.4.2/runc.amd64",
        "https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz",
        "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz",
        "https://github.com/coredns/coredns/releases/download/v1.14.7/coredns_1.14.7_linux_amd64.tgz",
        "https://raw.githubusercontent.com/projectcalico/calico/v3.32.2/manifests/calico.yaml",
    ]


def test_check_forwarding_explains_what_breaks(tmp_path: Path) -> None:
    """forwarding=0 in effect: a clear error naming the setting and the consequence."""
    knob = tmp_path / "net/ipv4/conf/all/forwarding"
    knob.parent.mkdir(parents=True)
    knob.write_text("0\n")
    result = bash_lib(f'check_forwarding "{tmp_path}"')
    assert result.returncode != 0
    assert "net.ipv4.conf.all.forwarding is '0', not 1" in result.stderr
    assert "Pods on different nodes will not reach each other" in result.stderr
    knob.write_text("1\n")
    assert bash_lib(f'check_forwarding "{tmp_path}"').returncode == 0


def test_kernel_settings_enable_forwarding_and_bridge_netfilter(tmp_path: Path) -> None:
    """The sysctl file sets net.ipv4.conf.all.forwarding=1; the modules file loads br_netfilter."""
    run_ok(f'render_kernel_settings "{tmp_path}"')
    sysctl = (tmp_path / "etc/sysctl.d/90-kubernetes-lab.conf").read_text()
    assert "net.ipv4.conf.all.forwarding = 1" in sysctl
    assert "net.bridge.bridge-nf-call-iptables = 1" in sysctl
    modules = (tmp_path / "etc/modules-load.d/kubernetes-lab.conf").read_text().split()
    assert {"overlay", "br_netfilter"} <= set(modules)


def test_swap_lines_are_commented_out_once(tmp_path: Path) -> None:
    """Swap entries in fstab are disabled; other lines and re-runs leave it alone."""
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "UUID=1 / ext4 errors=remount-ro 0 1\n"
        "/dev/sda5 none swap sw 0 0\n"
        "# /dev/sdb1 none swap sw 0 0\n"
    )
    run_ok(f'comment_out_swap "{fstab}"; comment_out_swap "{fstab}"')
    lines = fstab.read_text().splitlines()
    assert lines[0] == "UUID=1 / ext4 errors=remount-ro 0 1"
    assert lines[1] == "# disabled for the kubelet: /dev/sda5 none swap sw 0 0"
    assert lines[2] == "# /dev/sdb1 none swap sw 0 0"


def test_resolver_is_the_lb_and_dhclient_keeps_it(tmp_path: Path) -> None:
    """nameserver 10.240.0.40, search node.internal; dhclient must not rewrite it."""
    run_ok(f'render_resolver "{tmp_path}" "$LB_VIP"')
    resolv = (tmp_path / "etc/resolv.conf").read_text()
    assert "nameserver 10.240.0.40" in resolv.splitlines()
    assert "search node.internal" in resolv.splitlines()
    hook = (tmp_path / "etc/dhcp/dhclient-enter-hooks.d/zz-lab-keep-resolv-conf").read_text()
    assert "make_resolv_conf() { :; }" in hook


def test_upstream_resolvers_skip_loopback_and_the_lb_itself(tmp_path: Path) -> None:
    """An LB's resolv.conf pointing at itself is never its upstream; the first run's is kept."""
    saved = tmp_path / "saved"
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "nameserver 127.0.0.53\nnameserver 10.240.0.40\n"
        "nameserver 10.0.2.3\nnameserver 192.0.2.53\n"
    )
    assert run_ok(f'nameservers_in "{saved}" "{resolv}"').strip() == "10.0.2.3 192.0.2.53"
    saved.write_text("nameserver 198.51.100.1\n")
    assert run_ok(f'nameservers_in "{saved}" "{resolv}"').strip() == "198.51.100.1"
    assert run_ok(f'upstream_resolvers "{saved}"', UPSTREAM_DNS="none").strip() == ""
    assert run_ok(f'upstream_resolvers "{saved}"', UPSTREAM_DNS="9.9.9.9").strip() == "9.9.9.9"


def test_pki_is_kept_and_reissued_only_when_its_content_changes(tmp_path: Path) -> None:
    """Re-running keeps every key and certificate; a new controller re-issues the apiserver's."""
    run_ok(f'pki_generate_all "{tmp_path}"')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    run_ok(f'pki_generate_all "{tmp_path}"')
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert before == after
    run_ok(f'pki_generate_all "{tmp_path}"', CONTROLLER_COUNT="4")
    assert (tmp_path / "apiserver.crt").read_bytes() != before["apiserver.crt"]
    assert (tmp_path / "apiserver.key").read_bytes() == before["apiserver.key"]
    assert (tmp_path / "ca.crt").read_bytes() == before["ca.crt"]
    assert (tmp_path / "admin.crt").read_bytes() == before["admin.crt"]
    assert (tmp_path / "kubelet-controller-3.crt").exists()


def test_bootstrap_token_has_the_format_kubernetes_expects(tmp_path: Path) -> None:
    """[a-z0-9]{6}.[a-z0-9]{16}, created once."""
    import re

    run_ok(f'pki_bootstrap_token "{tmp_path}"')
    text = (tmp_path / "bootstrap-token.env").read_text()
    assert re.fullmatch(
        r"BOOTSTRAP_TOKEN_ID=[a-z0-9]{6}\nBOOTSTRAP_TOKEN_SECRET=[a-z0-9]{16}\n", text
    )
    run_ok(f'pki_bootstrap_token "{tmp_path}"')
    assert (tmp_path / "bootstrap-token.env").read_text() == text
    assert oct((tmp_path / "bootstrap-token.env").stat().st_mode & 0o777) == "0o600"


def test_install_bundle_sets_modes_whatever_the_upload_left(tmp_path: Path) -> None:
    """Keys, kubeconfigs and the token end up 0600, certificates 0644, even if uploaded 0644."""
    bundle = tmp_path / "bundle"
    for rel in (
        "etc/kubernetes/pki/ca.crt",
        "etc/kubernetes/pki/ca.key",
        "var/lib/kubelet/kubeconfig",
        "etc/kubernetes/pki/bootstrap-token.env",
    ):
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_text(rel)
        (bundle / rel).chmod(0o644)
    root = tmp_path / "root"
    run_ok(f'install_bundle "{bundle}" "{root}"')
    modes = {
        str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*") if p.is_file()
    }
    assert modes == {
        "etc/kubernetes/pki/ca.crt": 0o644,
        "etc/kubernetes/pki/ca.key": 0o600,
        "var/lib/kubelet/kubeconfig": 0o600,
        "etc/kubernetes/pki/bootstrap-token.env": 0o600,
    }
    assert (root / "etc/kubernetes/pki/ca.key").read_text() == "etc/kubernetes/pki/ca.key"


def test_bootstrap_token_secret_expires_after_the_ttl() -> None:
    """The Secret carries expiration = now + BOOTSTRAP_TOKEN_TTL_HOURS, RFC 3339 UTC."""
    from datetime import UTC, datetime, timedelta

    import yaml

    out = run_ok(
        'bootstrap_token_secret abcdef 0123456789abcdef "$(bootstrap_token_expiration)"',
        BOOTSTRAP_TOKEN_TTL_HOURS="2",
    )
    data = yaml.safe_load(out)["stringData"]
    expiration = datetime.strptime(data["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expiration - datetime.now(UTC) - timedelta(hours=2)) < timedelta(minutes=5)
    assert (data["token-id"], data["token-secret"]) == ("abcdef", "0123456789abcdef")


def test_label_nodes_timer_runs_the_copy_node_sh_keeps(tmp_path: Path) -> None:
    """The unit runs scripts/label-nodes.sh from /opt/lab/provisioning, where node.sh copies
    provisioning/ (the upload in /tmp/lab is gone after a reboot), never from /tmp."""
    import re

    from .conftest import PROVISIONING

    run_ok(f'render_label_nodes_timer "{tmp_path}"')
    unit = (tmp_path / "etc/systemd/system/lab-label-nodes.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    assert exec_start == "/bin/bash /opt/lab/provisioning/scripts/label-nodes.sh"
    assert "/tmp" not in unit
    # That path is provisioning/scripts/label-nodes.sh in the copy node.sh makes.
    assert run_ok('echo "$LAB_INSTALL_DIR"').strip() == "/opt/lab/provisioning"
    node_sh = (PROVISIONING / "scripts/node.sh").read_text()
    assert 'cp -a "$LAB_DIR/." "$LAB_INSTALL_DIR/"' in node_sh
    assert (PROVISIONING / "scripts/label-nodes.sh").is_file()
    timer = (tmp_path / "etc/systemd/system/lab-label-nodes.timer").read_text()
    assert "OnUnitActiveSec=30s" in timer


def test_bootstrap_token_helper_applies_a_fresh_expiring_token(tmp_path: Path) -> None:
    """scripts/bootstrap-token.sh applies a new token Secret that expires after the TTL and
    prints it as bootstrap-token.env lines (kubectl is a stand-in that keeps what it is given:
    this tests our script, not the cluster)."""
    import re
    import subprocess
    import sys
    from datetime import UTC, datetime, timedelta

    import yaml

    from .conftest import PROVISIONING, clean_env

    applied = tmp_path / "applied.yaml"
    fake = tmp_path / "bin/kubectl"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"assert sys.argv[1:] == ['--kubeconfig=/admin', 'apply', '-f', '-'], sys.argv\n"
        f"open({str(applied)!r}, 'w').write(sys.stdin.read())\n"
    )
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(PROVISIONING / "scripts/bootstrap-token.sh")],
        env=clean_env(
            PATH=f"{fake.parent}:/usr/bin:/bin",
            LAB_KUBECONFIG="/admin",
            BOOTSTRAP_TOKEN_TTL_HOURS="48",
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(
        r"BOOTSTRAP_TOKEN_ID=([a-z0-9]{6})\nBOOTSTRAP_TOKEN_SECRET=([a-z0-9]{16})\n", result.stdout
    )
    assert match, result.stdout
    secret = yaml.safe_load(applied.read_text())
    assert secret["metadata"]["name"] == f"bootstrap-token-{match.group(1)}"
    data = secret["stringData"]
    assert (data["token-id"], data["token-secret"]) == match.groups()
    expiration = datetime.strptime(data["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expiration - datetime.now(UTC) - timedelta(hours=48)) < timedelta(minutes=5)
    assert f"valid until {data['expiration']}" in result.stderr
