"""Fixtures for the provisioning tests: the lab rendered by provisioning/render.sh.

render.sh runs once per session per topology (a few seconds each) into a temporary directory;
the tests read what it wrote. A tool the tests need that is missing fails the test with the
package that provides it: nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "provisioning"
COREDNS = REPO / "coredns"
# A small manifest shaped like upstream's manifests/calico.yaml (no download at test time).
CALICO_FIXTURE = Path(__file__).with_name("fixtures") / "calico.yaml"

# Debian packages (or PyPI distributions) providing each tool, for the failure message.
TOOLS = {
    "shellcheck": "apt-get install shellcheck",
    "ruby": "apt-get install ruby",
    "openssl": "apt-get install openssl",
    "haproxy": "apt-get install haproxy",
    "systemd-analyze": "apt-get install systemd",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "provisioning: provisioning/ and coredns/ checks (shellcheck, ruby, openssl, ...)",
    )


def require_tool(name: str) -> str:
    """The path of NAME, or fail the test saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (CI installs it: {TOOLS.get(name, name)})")
    return path


def env_defaults(*files: str) -> dict[str, str]:
    """The defaults of versions.env / cluster.env (`: "${NAME:=value}"` lines)."""
    import re

    values: dict[str, str] = {}
    for name in files:
        for line in (PROVISIONING / name).read_text().splitlines():
            match = re.match(r'^:\s+"\$\{(\w+):=([^}]*)\}"', line)
            if match:
                values[match.group(1)] = match.group(2)
    return values


DEFAULTS = env_defaults("versions.env", "cluster.env")


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without any lab setting, so the .env defaults apply, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    env.update(overrides)
    return env


def render(outdir: Path, **overrides: str) -> Path:
    """render.sh into OUTDIR, Calico patched from the fixture by this interpreter's PyYAML."""
    require_tool("openssl")
    settings = {"RENDER_CALICO_MANIFEST": str(CALICO_FIXTURE), "LAB_PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(PROVISIONING / "render.sh"), str(outdir)],
        check=True,
        env=clean_env(**settings | overrides),
        capture_output=True,
        text=True,
    )
    return outdir


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default topology: lb-0, controller-0..2, worker-0..2, CoreDNS on the LB."""
    return render(tmp_path_factory.mktemp("lab-default"))


@pytest.fixture(scope="session")
def rendered_ha(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LBs with keepalived, nodehosts' own DNS server, one controller, one worker."""
    return render(
        tmp_path_factory.mktemp("lab-ha"),
        LB_COUNT="2",
        DNS_MODE="nodehosts",
        CONTROLLER_COUNT="1",
        WORKER_COUNT="1",
    )


def bash_lib(script: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Run SCRIPT in bash after sourcing the library and loading the .env defaults."""
    prelude = f'set -euo pipefail; source "{PROVISIONING}/lib/all.sh"; lab_load_env\n'
    return subprocess.run(
        ["bash", "-c", prelude + script],
        env=clean_env(**overrides),
        capture_output=True,
        text=True,
        check=False,
    )
