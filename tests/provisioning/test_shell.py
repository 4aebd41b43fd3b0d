"""The shell scripts: shellcheck-clean at warning level, strict mode, and their shared library."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import PROVISIONING, require_tool

pytestmark = pytest.mark.provisioning

SCRIPTS = sorted(
    [PROVISIONING / "render.sh", PROVISIONING / "host.sh", *PROVISIONING.glob("scripts/*.sh")]
)
LIBRARY = sorted(PROVISIONING.glob("lib/*.sh"))


def test_there_are_the_scripts_the_lab_needs() -> None:
    """Every role has its script, and the library is split by concern."""
    names = {p.name for p in SCRIPTS}
    assert {"node.sh", "lb.sh", "controller.sh", "worker.sh", "addons.sh"} <= names
    assert {"troubleshoot-static-pod.sh", "label-nodes.sh", "render.sh", "host.sh"} <= names
    assert {"smoke.sh", "bootstrap-token.sh"} <= names
    assert {p.name for p in LIBRARY} >= {"common.sh", "pki.sh", "kubeconfig.sh", "all.sh"}


@pytest.fixture(scope="module")
def shellcheck_findings() -> dict[str, list[str]]:
    """One shellcheck -S warning run over every script and library file."""
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "-S", "warning", "-x", "-f", "json1", *map(str, SCRIPTS + LIBRARY)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    findings: dict[str, list[str]] = {}
    for comment in json.loads(result.stdout)["comments"]:
        findings.setdefault(comment["file"], []).append(
            f"line {comment['line']}: SC{comment['code']} {comment['message']}"
        )
    return findings


@pytest.mark.parametrize("path", SCRIPTS + LIBRARY, ids=lambda p: str(p.relative_to(PROVISIONING)))
def test_shellcheck_is_clean_at_warning_level(
    path: Path, shellcheck_findings: dict[str, list[str]]
) -> None:
    """shellcheck -S warning; the library files are checked on their own."""
    assert shellcheck_findings.get(str(path), []) == []


def test_rendered_dhclient_hook_is_clean_posix_sh(rendered: Path) -> None:
    """The hook dhclient-script sources is plain sh, so it is checked as sh."""
    shellcheck = require_tool("shellcheck")
    hook = rendered / "nodes/worker-0/etc/dhcp/dhclient-exit-hooks.d/kubelet-node-ip"
    result = subprocess.run(
        [shellcheck, "-S", "warning", "--shell=sh", "-e", "SC2154", str(hook)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    # dhcpcd (Debian 13) sources its exit hook with the same variables: the same script.
    dhcpcd = rendered / "nodes/worker-0/etc/dhcpcd.exit-hook"
    assert dhcpcd.read_text() == hook.read_text()


@pytest.mark.parametrize(
    "path",
    [p for p in SCRIPTS if p.name != "troubleshoot-static-pod.sh"],
    ids=lambda p: p.name,
)
def test_scripts_run_in_strict_mode(path: Path) -> None:
    """Each provisioning script stops at the first failure."""
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines


def test_troubleshooting_script_walks_the_documented_steps() -> None:
    """crictl ps -a, crictl logs, /var/log/pods, journalctl -u kubelet, /livez?verbose."""
    text = (PROVISIONING / "scripts/troubleshoot-static-pod.sh").read_text()
    guide = (PROVISIONING / "TROUBLESHOOTING.md").read_text()
    for needle in (
        "crictl ps -a",
        "crictl logs",
        "/var/log/pods",
        "journalctl -u kubelet",
        "/livez?verbose",
    ):
        assert needle in text, needle
        assert needle in guide, needle
