"""Shared fixtures (fixtures only): a running fake API server and a kubeconfig for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer

API_TOKEN = "test-token"


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    """A fake kube-apiserver on 127.0.0.1 that accepts the bearer token API_TOKEN."""
    with FakeApiServer(tokens=[API_TOKEN]) as server:
        yield server


@pytest.fixture
def kubeconfig(api_server: FakeApiServer, tmp_path: Path) -> Path:
    """A kubeconfig the official client loads, pointing at `api_server` with API_TOKEN."""
    return api_server.write_kubeconfig(tmp_path / "kubeconfig", token=API_TOKEN)
