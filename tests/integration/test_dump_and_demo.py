"""`nodehosts dump` from a fresh LIST, and `nodehosts demo`, as an operator runs them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import nodehosts, nodehosts_dump

TOKEN = "dump-token"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN,
        lab_node("worker-0", "10.240.0.101", realistic=True),
        make_node("worker-1", addresses=[("Hostname", "worker-1")], ready=False),
    ) as server:
        yield server


def test_dump_prints_the_hosts_file_body(api: FakeApiServer, tmp_path: Path) -> None:
    """`dump` shows exactly the lines the hosts file would get."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    result = nodehosts_dump("--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "10.240.0.101 worker-0.node.internal worker-0\n"


def test_dump_json_explains_every_node(api: FakeApiServer, tmp_path: Path) -> None:
    """The JSON report lists each node with names, addresses, state and the skip reason."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    result = nodehosts_dump("--kubeconfig", str(kubeconfig), "--format", "json", "--domain", "lab")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    nodes = {entry["name"]: entry for entry in report["nodes"]}
    assert nodes["worker-0"]["published"] is True
    assert nodes["worker-0"]["names"] == ["worker-0.lab", "worker-0"]
    assert nodes["worker-0"]["addresses"] == ["10.240.0.101"]
    assert nodes["worker-0"]["ready"] is True
    assert nodes["worker-1"]["published"] is False
    assert nodes["worker-1"]["ready"] is False
    assert "address" in nodes["worker-1"]["reason"]
    assert report["resource_version"]
    assert report["counts"]["hosts"] == 1


def test_dump_against_an_unreachable_api_fails_with_a_clear_message(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """No traceback: one line saying the LIST failed and why, exit 1."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    api.outage()
    result = nodehosts_dump("--kubeconfig", str(kubeconfig))
    assert result.returncode == 1
    assert "cannot list nodes" in result.stderr
    assert "Traceback" not in result.stderr


def test_dump_with_a_revoked_token_says_so(api: FakeApiServer, tmp_path: Path) -> None:
    """A 401 is reported as an authentication problem."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token="wrong")
    result = nodehosts_dump("--kubeconfig", str(kubeconfig))
    assert result.returncode == 1
    assert "401" in result.stderr or "nauthorized" in result.stderr


def test_demo_runs_the_daemon_against_a_changing_cluster() -> None:
    """The demo prints what is published and a line for a change, then exits 0."""
    result = nodehosts("demo", "--duration", "5", "--seed", "7", "--dns-listen", "")
    assert result.returncode == 0, result.stderr
    assert "  controller-0   10.240.0.10" in result.stdout
    assert "  lb-0           10.240.0.40" in result.stdout
    # (read from the rewritten hosts file: the daemon published the join)
    assert re.search(r"(?m)^\d\d:\d\d:\d\d worker-1 joined: 10\.240\.0\.\d+$", result.stdout)
    assert "hosts_file_written" not in result.stdout + result.stderr  # logs: warning and up
