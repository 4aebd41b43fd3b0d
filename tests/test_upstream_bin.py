"""scripts/upstream-bin: pins that do not exist fail loudly; a built version is reused.

The builds themselves run in `make upstream` (part of `make check`), whose binaries the
real_cluster tests use; these tests check the script's promises around them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "upstream-bin"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env}, check=False,
    )  # fmt: skip


def test_a_pin_that_is_not_a_release_fails_loudly(tmp_path: Path) -> None:
    if shutil.which("go") is None:
        pytest.fail("go is not installed: scripts/upstream-bin needs it")
    # An environment variable of the same name wins over versions.env, as in the lab.
    result = run(
        "--only", "coredns", str(tmp_path / "bin"),
        COREDNS_VERSION="1.14.99", NODEHOSTS_UPSTREAM_CACHE=str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "github.com/coredns/coredns@v1.14.99 does not exist" in result.stderr
    assert "provisioning/versions.env" in result.stderr
    assert not (tmp_path / "bin" / "coredns").exists()
    assert not (tmp_path / "cache" / "coredns-v1.14.99").exists()


def test_an_unknown_component_is_refused(tmp_path: Path) -> None:
    result = run("--only", "kube-dns", str(tmp_path))
    assert result.returncode == 1
    assert "unknown component 'kube-dns'" in result.stderr


def test_a_cached_build_is_reused_not_rebuilt(tmp_path: Path) -> None:
    # A fake cache entry of the current recipe: the script must copy it, not build.
    cache = tmp_path / "cache"
    version = "v" + _pin("COREDNS_VERSION")
    entry = cache / f"coredns-{version}"
    entry.mkdir(parents=True)
    (entry / "coredns").write_text("#!/bin/sh\necho cached\n")
    (entry / "coredns").chmod(0o755)
    (entry / ".recipe").write_text(_recipe() + "\n")
    result = run("--only", "coredns", str(tmp_path / "bin"), NODEHOSTS_UPSTREAM_CACHE=str(cache))
    assert result.returncode == 0, result.stderr
    assert f"coredns {version}: cache hit" in result.stderr
    copied = tmp_path / "bin" / "coredns"
    ran = subprocess.run([copied], capture_output=True, text=True, check=True)
    assert ran.stdout == "cached\n"
    assert not (tmp_path / "bin" / ".recipe").exists()


def test_the_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: bash scripts/system-deps installs it")
    result = subprocess.run(
        ["shellcheck", "-S", "warning", "-x", str(SCRIPT)], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def _pin(name: str) -> str:
    out = subprocess.run(
        ["bash", "-c", f'source provisioning/versions.env && echo "${name}"'],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def _recipe() -> str:
    for line in SCRIPT.read_text().splitlines():
        if line.startswith("recipe="):
            return line.removeprefix("recipe=")
    raise AssertionError("scripts/upstream-bin has no recipe= line")
