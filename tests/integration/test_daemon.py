"""`nodehosts run` end to end: the real CLI process, the real kubernetes client over real HTTP
against the fake API server, and the hosts file as CoreDNS would read it."""

from __future__ import annotations

import functools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers import files
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import RECOVERY_TIMEOUT, start_daemon
from tests.helpers.files import read_text_or_empty
from tests.helpers.polling import wait_until

TOKEN = "test-token"
WORKER_0 = "10.240.0.101 worker-0.node.internal worker-0"
# This module waits 10 s for a line to appear (the service tests wait 15 s).
wait_for_line = functools.partial(files.wait_for_line, timeout=10)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN, lab_node("controller-0", "10.240.0.10"), lab_node("worker-0", "10.240.0.101")
    ) as server:
        yield server


@pytest.fixture
def hosts_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hosts"
    directory.mkdir()
    return directory


def test_the_hosts_file_follows_adds_address_changes_and_deletes(
    api: FakeApiServer, tmp_path: Path, hosts_dir: Path
) -> None:
    """A joining worker appears, a DHCP change moves it, a deleted node disappears."""
    hosts = hosts_dir / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        text = wait_for_line(hosts, WORKER_0)
        assert "10.240.0.10 controller-0.node.internal controller-0" in text.splitlines()

        api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
        wait_for_line(hosts, "10.240.0.150 worker-1.node.internal worker-1")
        # The first publication is one summary line; later changes are one line per node.
        assert [e["published"] for e in daemon.events_named("nodes_published")] == [2]
        wait_until(
            lambda: [e["node"] for e in daemon.events_named("node_published")],
            until=lambda names: names == ["worker-1"],
            what="one node_published line, for worker-1",
        )

        api.modify_object("nodes", lab_node("worker-1", "10.240.0.151"))
        text = wait_for_line(hosts, "10.240.0.151 worker-1.node.internal worker-1")
        assert "10.240.0.150" not in text

        api.delete_object("nodes", "worker-0")
        text = wait_for_line(hosts, WORKER_0, present=False)
        assert "worker-0" not in text
        assert daemon.process.poll() is None


def test_heartbeats_never_touch_the_file(
    api: FakeApiServer, tmp_path: Path, hosts_dir: Path
) -> None:
    """Kubelet status updates that change nothing published never cause a write."""
    hosts = hosts_dir / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN):
        text = wait_for_line(hosts, WORKER_0)
        assert "generation=1 " in text
        for _ in range(50):
            api.heartbeat("worker-0")
            api.heartbeat("controller-0")
        # Watch events arrive in order: once these two real changes are in the file, every
        # heartbeat before them has been handled, and the generation counts every write.
        # (An add and delete inside one coalescing window would rightly write nothing.)
        api.add_object("nodes", lab_node("worker-9", "10.240.0.199"))
        wait_for_line(hosts, "10.240.0.199 worker-9.node.internal worker-9")
        api.delete_object("nodes", "worker-9")
        text = wait_until(
            lambda: read_text_or_empty(hosts),
            until=lambda t: "generation=3 " in t,
            what="exactly two more writes",
        )
        assert "worker-9" not in text
        written = hosts.stat()
        for _ in range(50):
            api.heartbeat("worker-0")
        api.add_object("nodes", lab_node("worker-8", "10.240.0.198"))
        text = wait_for_line(hosts, "10.240.0.198 worker-8.node.internal worker-8")
        assert "generation=4 " in text
        assert hosts.stat().st_ino != written.st_ino


def test_nothing_is_written_before_the_first_complete_list(
    api: FakeApiServer, tmp_path: Path, hosts_dir: Path
) -> None:
    """With the API down at start the old file stays as it is; the first LIST replaces it."""
    hosts = hosts_dir / "nodes.hosts"
    hosts.write_text("10.240.0.55 old-node.node.internal old-node\n")
    api.outage()
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        wait_until(
            lambda: daemon.events_named("api_error"),
            timeout=15,
            what="an api_error log line while the API is down",
        )
        assert hosts.read_text() == "10.240.0.55 old-node.node.internal old-node\n"
        assert daemon.process.poll() is None, "the daemon must keep running while the API is down"
        api.restore()
        text = wait_for_line(hosts, WORKER_0, timeout=RECOVERY_TIMEOUT)
        assert "old-node" not in text


def test_an_outage_keeps_the_last_file_and_changes_flow_again_after(
    api: FakeApiServer, tmp_path: Path, hosts_dir: Path
) -> None:
    """While the API is unreachable the file keeps the last records; then it catches up."""
    hosts = hosts_dir / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        text = wait_for_line(hosts, WORKER_0)
        api.outage()
        wait_until(
            lambda: daemon.events_named("api_error"), timeout=15, what="an api_error log line"
        )
        assert hosts.read_text() == text
        api.add_object("nodes", lab_node("worker-2", "10.240.0.160"))
        api.restore()
        wait_for_line(
            hosts, "10.240.0.160 worker-2.node.internal worker-2", timeout=RECOVERY_TIMEOUT
        )


def test_a_compacted_history_relists_and_drops_nodes_deleted_meanwhile(
    api: FakeApiServer, tmp_path: Path, hosts_dir: Path
) -> None:
    """410 Gone after compaction: the state is rebuilt from a fresh LIST, not patched."""
    hosts = hosts_dir / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        api.outage()
        api.delete_object("nodes", "worker-0")
        api.add_object("nodes", lab_node("worker-3", "10.240.0.170"))
        api.compact()
        api.restore()
        text = wait_for_line(
            hosts, "10.240.0.170 worker-3.node.internal worker-3", timeout=RECOVERY_TIMEOUT
        )
        assert "worker-0" not in text
        assert len(daemon.events_named("nodes_synced")) >= 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_exits_0(
    api: FakeApiServer, tmp_path: Path, hosts_dir: Path, signum: int
) -> None:
    """SIGTERM (systemctl stop) and SIGINT (Ctrl-C) end `run` cleanly (how fast: bench/stop.py)."""
    hosts = hosts_dir / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        code, _ = daemon.stop(signum, timeout=30)
    assert code == 0, daemon.log_text()
    assert daemon.events_named("stopped")


def test_an_identical_file_from_a_previous_run_is_kept_with_its_generation(
    api: FakeApiServer, tmp_path: Path, hosts_dir: Path
) -> None:
    """A restart that finds the same records on disk does not rewrite the file."""
    hosts = hosts_dir / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        daemon.stop()
    first = hosts.stat()
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        wait_until(lambda: daemon.events_named("ready"), timeout=15, what="ready")
        assert (hosts.stat().st_ino, hosts.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
        api.add_object("nodes", lab_node("worker-4", "10.240.0.180"))
        text = wait_for_line(hosts, "10.240.0.180 worker-4.node.internal worker-4")
    assert "generation=2 " in text
