"""The command line as an operator meets it: exit codes and messages that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodehosts import __version__
from tests.helpers.daemon import nodehosts


def test_version_prints_the_package_version() -> None:
    """`nodehosts --version` names the version and exits 0."""
    result = nodehosts("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"nodehosts {__version__}"


def test_no_command_is_a_usage_error() -> None:
    """Running without a command exits 2 with usage."""
    result = nodehosts()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """A valid file passes check-config with exit 0."""
    config = tmp_path / "config.toml"
    config.write_text('[records]\ndomain = "lab.internal"\n[dns]\nlisten = ["127.0.0.1:5353"]\n')
    result = nodehosts("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('[records]\ndomian = "x"\n', "records.domian: unknown key"),
        ("[dns]\nttl = -5\n", "dns.ttl"),
        ('[records]\naddress_types = ["InternalIP", "Bogus"]\n', "records.address_types"),
        ("[records\n", "invalid TOML"),
    ],
)
def test_check_config_names_the_bad_key(tmp_path: Path, content: str, named: str) -> None:
    """A bad file exits 2 and the message names the key."""
    config = tmp_path / "config.toml"
    config.write_text(content)
    result = nodehosts("check-config", "--config", str(config))
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    """Issue 12: a clear error and exit 2 (not a traceback and exit 1, a restart loop)."""
    config = tmp_path / "config.toml"
    config.write_bytes(b'[records]\ndomain = "caf\xe9"\n')
    for command in ("check-config", "run"):
        result = nodehosts(command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert "not UTF-8" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    """A flag's bad value is reported with the flag's name."""
    result = nodehosts("check-config", "--config", "", "--dns-listen", "localhost:53")
    assert result.returncode == 2
    assert "--dns-listen" in result.stderr


def test_run_with_nothing_to_publish_is_a_config_error(tmp_path: Path) -> None:
    """Neither a hosts file nor a DNS listener: exit 2 before touching the API."""
    config = tmp_path / "config.toml"
    config.write_text("")
    result = nodehosts("run", "--config", str(config))
    assert result.returncode == 2
    assert "nothing to publish" in result.stderr


def test_run_with_a_missing_hosts_directory_is_a_config_error(tmp_path: Path) -> None:
    """The hosts file's directory must exist; the error names hosts.file."""
    config = tmp_path / "config.toml"
    config.write_text(f'[hosts]\nfile = "{tmp_path}/absent/nodes.hosts"\n')
    result = nodehosts("run", "--config", str(config))
    assert result.returncode == 2
    assert "hosts.file" in result.stderr


def test_run_with_a_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    """A kubeconfig path that does not exist is named in the error."""
    result = nodehosts(
        "run",
        "--config",
        "",
        "--hosts-file",
        str(tmp_path / "nodes.hosts"),
        "--kubeconfig",
        str(tmp_path / "nope"),
    )
    assert result.returncode == 2
    assert "kubernetes.kubeconfig" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--allowed-suffix", "bad_suffix"),
        ("--reserved-suffix", "a..b"),
        ("--csr-address-types", "InternalIP,Hostname"),
    ],
)
def test_bad_trust_flags_name_the_flag(flag: str, value: str) -> None:
    """The record and CSR trust flags are validated like the file's keys (issue 12)."""
    result = nodehosts("check-config", "--config", "", flag, value)
    assert result.returncode == 2
    assert flag in result.stderr
    assert "Traceback" not in result.stderr
