"""`nodehosts check-config` as an operator uses it: every problem at once, with FILE:LINE and
a suggestion, the kubeconfig really loaded, and --offline for another machine's config."""

from __future__ import annotations

from pathlib import Path

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.daemon import nodehosts

TOP = Path(__file__).resolve().parent.parent
BAD = """\
[records]
domian = "lab"
address_types = ["InternalIP"]

[dsn]
listen = []

[dns]
ttl = "abc"
negative_ttl = 5

[hosts]
file = "/nonexistent/dir/nodes.hosts"
"""


def test_every_problem_at_once_with_file_line_and_suggestions(tmp_path: Path) -> None:
    """A misspelt key and section, a bad value, a bad flag and a missing directory: all five,
    each where it is, and the nearest known name for the misspellings."""
    config = tmp_path / "config.toml"
    config.write_text(BAD)
    result = nodehosts("check-config", "--config", str(config), "--upstream", "not-an-ip")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:2: records.domian: unknown key (did you mean records.domain?)",
        f"{config}:5: [dsn]: unknown section (did you mean [dns]?)",
        f"{config}:9: dns.ttl: expected a whole number from 0 to 86400 (got 'abc')",
        "--upstream: the address must be an IP address (got 'not-an-ip')",
        f"{config}:13: hosts.file: directory /nonexistent/dir does not exist "
        "(got '/nonexistent/dir/nodes.hosts')",
        f"nodehosts: 5 problem(s) in {config}",
    ]
    assert result.stdout == ""


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    """Broken TOML: one problem, at the line where parsing stopped."""
    config = tmp_path / "config.toml"
    config.write_text('[records]\ndomain = "lab"\n[dns\n')
    result = nodehosts("check-config", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith(f"{config}:3: invalid TOML: ")


def test_an_empty_kubeconfig_fails(tmp_path: Path) -> None:
    """A kubeconfig that exists but is empty is not "config ok"."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(f'[kubernetes]\nkubeconfig = "{kubeconfig}"\n')
    result = nodehosts("check-config", "--config", str(config))
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{config}:2: kubernetes.kubeconfig: {kubeconfig}: ")
    assert "empty" in first


def test_a_kubeconfig_without_a_cluster_fails(tmp_path: Path) -> None:
    """A kubeconfig whose current context names no cluster server is refused."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\n"
        "contexts:\n- name: c\n  context: {cluster: gone, user: nobody}\ncurrent-context: c\n"
    )
    result = nodehosts("check-config", "--config", "", "--kubeconfig", str(kubeconfig))
    assert result.returncode == 2
    assert result.stderr.startswith(f"--kubeconfig: {kubeconfig}: ")


def test_a_working_kubeconfig_passes(tmp_path: Path) -> None:
    """A kubeconfig naming a cluster with a server and credentials is fine (not contacted)."""
    with FakeApiServer(tokens=["t"]) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token="t")
    result = nodehosts("check-config", "--config", "", "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "config ok: (no file)\n"


def test_offline_checks_the_shipped_config_without_its_paths() -> None:
    """deploy/config.toml names /var/lib/nodehosts and /etc/nodehosts/kubeconfig: with
    --offline it passes anywhere; without, a machine lacking them is told which."""
    shipped = TOP / "deploy" / "config.toml"
    offline = nodehosts("check-config", "--config", str(shipped), "--offline")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == (
        f"config ok: {shipped} (offline: paths and the kubeconfig not checked)\n"
    )
    if Path("/etc/nodehosts/kubeconfig").exists():
        return  # this machine has the package configured: nothing to learn below
    here = nodehosts("check-config", "--config", str(shipped))
    assert here.returncode == 2
    assert "kubernetes.kubeconfig: no such file (got '/etc/nodehosts/kubeconfig')" in here.stderr


def test_offline_still_reports_bad_values(tmp_path: Path) -> None:
    """--offline skips the machine's side only, not the values."""
    config = tmp_path / "config.toml"
    config.write_text('[dns]\nttl = -1\n[kubernetes]\nkubeconfig = "/elsewhere/kubeconfig"\n')
    result = nodehosts("check-config", "--config", str(config), "--offline")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith(f"{config}:2: dns.ttl: ")
    assert "kubeconfig" not in result.stderr


def test_a_rule_between_two_keys_points_at_the_key_it_names(tmp_path: Path) -> None:
    """dns.negative_ttl longer than dns.ttl: at negative_ttl's line in the file, or at its
    flag when the flag gave it (the error's key says which setting, not its message)."""
    config = tmp_path / "config.toml"
    config.write_text("[dns]\nttl = 10\nnegative_ttl = 20\n")
    in_file = nodehosts("check-config", "--config", str(config), "--offline")
    assert in_file.stderr.splitlines()[0] == (
        f"{config}:3: dns.negative_ttl: 20 is longer than dns.ttl 10"
    )
    by_flag = nodehosts("check-config", "--config", "", "--offline", "--negative-ttl", "60")
    assert by_flag.stderr.splitlines()[0] == (
        "--negative-ttl: dns.negative_ttl: 60 is longer than dns.ttl 30"
    )
