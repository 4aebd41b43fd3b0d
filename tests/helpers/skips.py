"""The suite's one rule for skipping: CI never skips.

Contract: `skip_unless_ci(reason, how=...)` fails the test when the environment variable CI is
set (to anything but "", "0" or "false": CI=true on every CI service), so a missing tool or
privilege on a CI runner is a red test, not a silent gap. Run locally it skips, and the message
says how to run what was skipped (`how`: a command or what to install).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["in_ci", "skip_unless_ci"]


def in_ci() -> bool:
    """True on a CI runner (CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_unless_ci(reason: str, *, how: str) -> NoReturn:
    """Skip locally with how to run it; fail under CI."""
    message = f"{reason}; to run it: {how}"
    if in_ci():
        pytest.fail(f"CI never skips: {message}")
    pytest.skip(message)
