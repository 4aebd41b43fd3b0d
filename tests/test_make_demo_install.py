"""`make demo` installs only the runtime, quietly; the package metadata builds with every
setuptools we support without a warning (66 in Debian bookworm and the newest from PyPI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")

pytestmark = pytest.mark.slow


def test_make_demo_venv_has_the_runtime_only_and_prints_no_warning(tmp_path: Path) -> None:
    """The recipe behind `make demo`: no test or lint extras, nothing said but errors."""
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-s", f"VENV_DEMO={venv}", f"PY={sys.executable}", f"{venv}/.stamp"],
        cwd=TOP, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = (result.stdout + result.stderr).lower()
    assert "warning" not in said, said
    assert "deprecat" not in said, said
    assert (venv / "bin" / "nodehosts").exists()
    for extra in ("pytest", "ruff", "hypothesis"):
        assert not (venv / "bin" / extra).exists(), f"{extra} installed for the demo"


def test_make_demo_names_the_python_it_needs(tmp_path: Path) -> None:
    """An old or missing python is one clear line, not a pip traceback."""
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-s", f"VENV_DEMO={venv}", "PY=false", f"{venv}/.stamp"],
        cwd=TOP, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "needs Python >= 3.11 with venv" in result.stderr
    assert not venv.exists()


@pytest.mark.skipif(
    not SYSTEM_PYTHON.exists() or shutil.which("dpkg") is None,
    reason="Debian's python3 with python3-setuptools (bookworm: 66) is checked on Debian only",
)
def test_debian_setuptools_builds_the_metadata_without_warnings(tmp_path: Path) -> None:
    """Debian's own setuptools (what dpkg-buildpackage uses) accepts the license as given: 66
    rejects the SPDX string form that the newest setuptools asks for; a LICENSE file suits both."""
    source = tmp_path / "src"
    shutil.copytree(
        TOP, source, ignore=shutil.ignore_patterns(".venv*", ".git", "dist", "*.egg-info", "build")
    )
    result = subprocess.run(
        [str(SYSTEM_PYTHON), "-c",
         "import setuptools; setuptools.setup()", "-q", "bdist_wheel", "-d", str(tmp_path)],
        cwd=source, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if "No module named" in result.stderr and "wheel" in result.stderr:
        pytest.skip("needs python3-wheel")
    assert result.returncode == 0, result.stderr
    # (66 also says `[tool.setuptools]` support is beta: its own notice, not about us)
    assert "license" not in result.stderr.lower(), result.stderr
    wheel = next(tmp_path.glob("nodehosts-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith("METADATA"))
        assert "License-File: LICENSE" in archive.read(metadata).decode()
