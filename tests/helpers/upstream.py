"""The upstream binaries built by scripts/upstream-bin (kube-apiserver, etcd, coredns, ...).

`make upstream` (part of `make test`) builds them into .upstream/bin; NODEHOSTS_UPSTREAM_BIN
points elsewhere. A missing binary fails the test under CI (CI never skips) and skips it
locally with the command that builds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.skips import skip_unless_ci

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("NODEHOSTS_UPSTREAM_BIN", REPO / ".upstream" / "bin"))


def upstream_binary(name: str) -> Path:
    """The path of an upstream executable, e.g. "kube-apiserver" or "cni/bridge"."""
    path = BIN_DIR / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    skip_unless_ci(f"{path} is missing", how=f"make upstream (scripts/upstream-bin {BIN_DIR})")
