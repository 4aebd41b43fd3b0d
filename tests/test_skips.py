"""The suite's skip rule itself: under CI a skip guard fails; locally it skips and says how to
run what it skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUARDED = """
from tests.helpers.skips import skip_unless_ci

def test_guarded():
    skip_unless_ci("needs a tool", how="apt-get install the-tool")
"""


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", "1 failed"), ("1", "1 failed"), ("", "1 skipped")]
)
def test_a_skip_guard_fails_under_ci_and_skips_locally_with_how(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    """CI=true (or 1): failed with the message; no CI: skipped, naming the command."""
    test_file = tmp_path / "test_guarded.py"
    test_file.write_text(GUARDED)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={**os.environ, "CI": ci, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert outcome in result.stdout, result.stdout
    assert "needs a tool; to run it: apt-get install the-tool" in result.stdout
