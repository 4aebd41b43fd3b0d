"""`nodehosts run --once`: the hosts file from one LIST, then exit (cron, first boot)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import nodehosts

TOKEN = "once-token"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101")) as server:
        yield server


def run_once(kubeconfig: Path, hosts: Path, *extra: str):  # type: ignore[no-untyped-def]
    return nodehosts(
        "run", "--once", "--config", "", "--kubeconfig", str(kubeconfig),
        "--hosts-file", str(hosts), "--log-format", "json", *extra,
    )  # fmt: skip


def test_once_writes_the_file_then_only_when_the_nodes_change(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Generation 1 with the node; unchanged nodes leave the file alone; a join makes 2."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    hosts = tmp_path / "nodes.hosts"
    first = run_once(kubeconfig, hosts)
    assert first.returncode == 0, first.stderr
    text = hosts.read_text()
    assert "# generation=1 hosts=1 addresses=1" in text
    assert text.endswith("10.240.0.101 worker-0.node.internal worker-0\n")
    inode, mtime = hosts.stat().st_ino, hosts.stat().st_mtime_ns

    again = run_once(kubeconfig, hosts)
    assert again.returncode == 0, again.stderr
    assert (hosts.stat().st_ino, hosts.stat().st_mtime_ns) == (inode, mtime)
    assert '"event": "hosts_file_current"' in again.stderr

    api.add_object("nodes", lab_node("worker-1", "10.240.0.102"))
    third = run_once(kubeconfig, hosts)
    assert third.returncode == 0, third.stderr
    text = hosts.read_text()
    assert "# generation=2 hosts=2 addresses=2" in text
    assert "10.240.0.102 worker-1.node.internal worker-1\n" in text


def test_once_with_the_api_down_keeps_the_file_and_exits_1(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """No LIST, no write: the last good file stays, exit 1 with the reason."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    hosts = tmp_path / "nodes.hosts"
    assert run_once(kubeconfig, hosts).returncode == 0
    before = hosts.read_bytes()
    api.outage()
    result = run_once(kubeconfig, hosts)
    assert result.returncode == 1
    assert "cannot list nodes" in result.stderr
    assert hosts.read_bytes() == before


def test_once_needs_a_hosts_file(api: FakeApiServer, tmp_path: Path) -> None:
    """--once only writes the hosts file: without one it is a usage error."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    result = nodehosts(
        "run", "--once", "--config", "", "--kubeconfig", str(kubeconfig),
        "--dns-listen", "127.0.0.1:5353",
    )  # fmt: skip
    assert result.returncode == 2
    assert "run --once writes the hosts file" in result.stderr
