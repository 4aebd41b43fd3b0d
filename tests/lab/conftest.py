"""Fixtures of the lab test: what it needs on the host, built once per run, and failure reports
that carry every machine's kubelet journal, `crictl ps -a` and the static pods' logs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

_REPORTED: set[tuple[int, str]] = set()

TOOLS = (
    "systemd-nspawn", "nsenter", "debootstrap", "dnsmasq", "ip", "dpkg-buildpackage",
    "lintian", "jq", "gcc", "openssl", "go",
)  # fmt: skip


def require(missing: list[str]) -> None:
    """A missing prerequisite fails under CI and skips locally, saying what is missing."""
    if not missing:
        return
    message = "the lab test needs: " + ", ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message + " (see provisioning/README.md, 'The lab in containers')")


def missing_host_prerequisites() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root"]
    missing += [tool for tool in TOOLS if shutil.which(tool) is None]
    if shutil.which("gcc") and not _static_libc():
        missing.append("the static C library (libc6-dev) for pause")
    return missing


def _static_libc() -> bool:
    result = subprocess.run(
        ["gcc", "-print-file-name=libc.a"], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and os.path.isabs(result.stdout.strip())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed:
        return
    lab = item.funcargs.get("lab") if hasattr(item, "funcargs") else None
    if lab is None or not hasattr(lab, "diagnostics"):
        return
    key = (id(lab), item.nodeid)
    if key not in _REPORTED:
        _REPORTED.add(key)
        report.sections.append(("lab diagnostics", lab.diagnostics()))
