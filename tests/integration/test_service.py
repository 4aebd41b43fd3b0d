"""`nodehosts run` as systemd runs it: notify and watchdog, metrics and health, the control
socket behind `dump --from daemon` and `dump --diff`, and saved records served across a restart
while the API is down. The real CLI process, the real client, the fake API server."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import (
    RECOVERY_TIMEOUT,
    nodehosts_dump,
    start_daemon,
    start_dns_daemon,
    start_listening_daemon,
)
from tests.helpers.dig import DigError, dig
from tests.helpers.files import read_text_or_empty, wait_for_line
from tests.helpers.polling import wait_until
from tests.helpers.service import NotifySocket, http_get, metric, short_directory

TOKEN = "service-token"
WORKER_0 = "10.240.0.101 worker-0.node.internal worker-0"
CONTROLLER_0 = "10.240.0.10 controller-0.node.internal controller-0"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN, lab_node("controller-0", "10.240.0.10"), lab_node("worker-0", "10.240.0.101")
    ) as server:
        yield server


@pytest.fixture
def sockets() -> Iterator[Path]:
    with short_directory() as directory:
        yield directory


def wait_for_answer(port: int, name: str, expected: list[str], *, timeout: float = 15) -> None:
    """Poll the daemon's DNS (which may not listen yet) until `name` A is `expected`."""

    def answer() -> list[str] | None:
        try:
            return sorted(dig("127.0.0.1", port, name, "A"))
        except DigError:
            return None

    wait_until(answer, until=lambda got: got == sorted(expected), timeout=timeout, what=name)


def dump_from_daemon(control: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`nodehosts dump --from daemon` through the control socket `control`."""
    return nodehosts_dump("--from", "daemon", "--control-socket", str(control), *args)


# --- systemd notify and watchdog


def test_systemd_hears_ready_after_the_first_write_then_watchdog_pings_and_stopping(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """READY=1 comes once the file is written; WATCHDOG=1 keeps coming, also with the API down.

    (How often is `watchdog_interval`'s, tested in tests/adapters/test_sdnotify.py; counting
    pings after a fixed sleep would measure the machine's load.)"""
    hosts = tmp_path / "nodes.hosts"
    with NotifySocket(on_ready=lambda: read_text_or_empty(hosts)) as manager:
        env = manager.env(watchdog_usec=400_000)
        with start_daemon(
            api, tmp_path, "--hosts-file", str(hosts), token=TOKEN, env=env
        ) as daemon:
            ready = manager.wait_for("READY", "1")
            assert WORKER_0 in str(manager.ready_result).splitlines(), "READY before the write"
            assert (ready.get("STATUS") or "").startswith("2/2 nodes published, 2 hosts")
            assert "last sync 20" in (ready.get("STATUS") or "")
            assert manager.statuses()[0] == "waiting for the first list of Nodes"

            wait_until(
                lambda: [n for n in manager.with_key("WATCHDOG", "1") if n.at > ready.at],
                until=lambda pings: len(pings) >= 5,
                timeout=20,
                what="five WATCHDOG=1 after READY=1",
            )

            api.outage()
            wait_until(
                lambda: [s for s in manager.statuses() if "API error since" in s],
                timeout=15,
                what="a STATUS line about the API error",
            )
            outage_started = time.monotonic()
            wait_until(
                lambda: [n for n in manager.with_key("WATCHDOG", "1") if n.at > outage_started],
                until=lambda pings: len(pings) >= 4,
                timeout=20,
                what="WATCHDOG=1 during the API outage (it must not stop the pings)",
            )
            assert not manager.with_key("STOPPING")

            code, _ = daemon.stop(signal.SIGTERM)
            assert code == 0, daemon.log_text()
            stopping = manager.wait_for("STOPPING", "1", timeout=10)
            assert stopping.get("STATUS") == "stopping"
            assert len(manager.with_key("READY")) == 1


def test_a_first_start_with_the_api_down_waits_instead_of_crash_looping(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """No saved records, no API: systemd is asked to wait (not to kill and restart), READY later."""
    hosts = tmp_path / "nodes.hosts"
    api.outage()
    with (
        NotifySocket(on_ready=lambda: read_text_or_empty(hosts)) as manager,
        start_daemon(
            api, tmp_path, "--hosts-file", str(hosts), token=TOKEN, env=manager.env()
        ) as daemon,
    ):
        extend = manager.wait_for("EXTEND_TIMEOUT_USEC", timeout=10)
        assert int(extend.fields["EXTEND_TIMEOUT_USEC"]) >= 30_000_000
        wait_until(
            lambda: [s for s in manager.statuses() if "API error: unreachable" in s],
            timeout=15,
            what="a STATUS line saying the API is unreachable",
        )
        assert not manager.with_key("READY")
        assert not hosts.exists()
        api.restore()
        manager.wait_for("READY", "1", timeout=RECOVERY_TIMEOUT)
        assert WORKER_0 in str(manager.ready_result).splitlines()
        assert daemon.process.poll() is None


def test_without_notify_socket_the_daemon_runs_and_stops_the_same(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Outside systemd (a terminal, a container) nothing is sent and nothing fails."""
    hosts = tmp_path / "nodes.hosts"
    with start_daemon(
        api, tmp_path, "--hosts-file", str(hosts), token=TOKEN, env={"NOTIFY_SOCKET": ""}
    ) as daemon:
        wait_for_line(hosts, WORKER_0)
        code, _ = daemon.stop(timeout=30)
    assert code == 0
    assert not daemon.events_named("sd_notify_failed")


# --- metrics and health


def test_metrics_and_health_answer_and_readyz_turns_200_after_the_first_sync(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """healthz answers at once; readyz is 503 until the first sync is published, then 200."""
    hosts = tmp_path / "nodes.hosts"
    api.add_object("nodes", make_node("worker-9", addresses=[], hostname=""))
    api.outage()
    daemon, ports = start_listening_daemon(
        api, tmp_path, "--hosts-file", str(hosts), metrics="127.0.0.1", token=TOKEN
    )
    base = f"http://127.0.0.1:{ports.metrics}"
    with daemon:
        assert wait_until(
            lambda: _probe(f"{base}/healthz"), timeout=15, what="/healthz to answer"
        ) == (200, "ok\n")
        status, body = http_get(f"{base}/readyz")
        assert status == 503
        assert body.startswith("not ready: waiting for the first complete list of Nodes")
        text = wait_until(
            lambda: http_get(f"{base}/metrics")[1],
            until=lambda t: (
                (metric(t, "nodehosts_api_errors_total", {"reason": "unreachable"}) or 0) >= 1
            ),
            timeout=15,
            what="an unreachable API counted",
        )
        assert metric(text, "nodehosts_ready") == 0
        assert not hosts.exists()

        api.restore()
        status, body = wait_until(
            lambda: http_get(f"{base}/readyz"),
            until=lambda answer: answer[0] == 200,
            timeout=RECOVERY_TIMEOUT,
            what="/readyz 200",
        )
        assert body == "ready: 2 hosts published, generation 1\n"
        assert WORKER_0 in read_text_or_empty(hosts).splitlines()
        text = http_get(f"{base}/metrics")[1]
        assert metric(text, "nodehosts_ready") == 1
        assert metric(text, "nodehosts_nodes_seen") == 3
        assert metric(text, "nodehosts_nodes_published") == 2
        assert metric(text, "nodehosts_nodes_skipped", {"reason": "no_address"}) == 1
        assert metric(text, "nodehosts_records_hosts") == 2
        assert metric(text, "nodehosts_records_addresses", {"family": "ipv4"}) == 2
        assert metric(text, "nodehosts_records_generation") == 1
        assert metric(text, "nodehosts_hosts_file_writes_total") == 1
        assert (metric(text, "nodehosts_hosts_file_last_write_timestamp_seconds") or 0) > 1e9
        assert (metric(text, "nodehosts_sync_last_success_timestamp_seconds") or 0) > 1e9
        assert metric(text, "nodehosts_records_stale") == 0

        api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
        text = wait_until(
            lambda: http_get(f"{base}/metrics")[1],
            # The publication is counted before the file is written, the generation after:
            # wait for the write, the end of the change.
            until=lambda t: metric(t, "nodehosts_hosts_file_writes_total") == 2,
            timeout=20,
            what="worker-1 written",
        )
        assert metric(text, "nodehosts_nodes_published") == 3
        assert metric(text, "nodehosts_records_generation") == 2
        code, _ = daemon.stop()
    assert code == 0


def _probe(url: str) -> tuple[int, str] | None:
    try:
        return http_get(url, timeout=1)
    except OSError:
        return None


# --- the control socket: dump --from daemon, auto, --diff


def test_dump_from_daemon_shows_the_live_state_with_every_decision(
    api: FakeApiServer, tmp_path: Path, sockets: Path
) -> None:
    """The daemon answers with every node, its decision and why, and where the watch stands."""
    hosts = tmp_path / "nodes.hosts"
    control = sockets / "control.sock"
    api.add_object("nodes", lab_node("worker-1", "10.240.0.150", ready=False))
    args = ("--hosts-file", str(hosts), "--control-socket", str(control))
    with start_daemon(api, tmp_path, *args, "--exclude-not-ready", token=TOKEN) as daemon:
        wait_until(lambda: daemon.events_named("ready"), timeout=15, what="ready")

        result = dump_from_daemon(control, "--format", "json")
        assert result.returncode == 0, result.stderr
        state = json.loads(result.stdout)
        assert state["source"] == "daemon"
        assert state["pid"] == daemon.process.pid
        assert (state["ready"], state["stale"], state["synced"]) == (True, False, True)
        assert state["generation"] == 1
        assert state["resource_version"] == api.resource_version
        assert state["last_sync"].endswith("Z")
        assert state["last_error"] is None
        assert state["policy"]["exclude_not_ready"] is True
        nodes = {entry["name"]: entry for entry in state["nodes"]}
        assert nodes["worker-0"]["published"] is True
        assert nodes["worker-0"]["addresses"] == ["10.240.0.101"]
        assert nodes["worker-1"]["published"] is False
        assert "not ready" in nodes["worker-1"]["reason"]
        assert [host["names"][0] for host in state["hosts"]] == [
            "controller-0.node.internal",
            "worker-0.node.internal",
        ]
        assert state["counts"] == {"nodes": 3, "published_nodes": 2, "hosts": 2, "addresses": 2}

        result = dump_from_daemon(control)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{CONTROLLER_0}\n{WORKER_0}\n"
        assert result.stdout in read_text_or_empty(hosts)

        # auto (the default) asks the daemon when it answers...
        result = nodehosts_dump("--control-socket", str(control), "--format", "json")
        assert json.loads(result.stdout)["source"] == "daemon"
        # ...unless a flag asks for another view: then it LISTs itself.
        kubeconfig = tmp_path / "kubeconfig"
        result = nodehosts_dump(
            "--control-socket", str(control), "--kubeconfig", str(kubeconfig), "--format", "json"
        )
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        assert listed["source"] == "list"
        assert {n["name"]: n["published"] for n in listed["nodes"]}["worker-1"] is True
        assert daemon.stop()[0] == 0

    assert not control.exists(), "the socket is removed on a clean stop"
    result = dump_from_daemon(control)
    assert result.returncode == 1
    assert "no control socket" in result.stderr
    result = nodehosts_dump(
        "--control-socket", str(control), "--kubeconfig", str(tmp_path / "kubeconfig")
    )
    assert result.returncode == 0, result.stderr
    assert WORKER_0 in result.stdout.splitlines()


def test_dump_diff_shows_what_a_daemon_cut_off_from_the_api_serves_stale(
    api: FakeApiServer, tmp_path: Path, sockets: Path
) -> None:
    """0 while the daemon is current; 1 with - stale and + missing lines once it falls behind."""
    hosts = tmp_path / "nodes.hosts"
    control = sockets / "control.sock"
    api.authorize("operator-token")
    operator = api.write_kubeconfig(sockets / "operator-kubeconfig", token="operator-token")
    diff = ("--diff", "--control-socket", str(control), "--kubeconfig", str(operator))
    with start_daemon(
        api, tmp_path, "--hosts-file", str(hosts), "--control-socket", str(control), token=TOKEN
    ) as d:
        wait_until(lambda: d.events_named("ready"), timeout=15, what="ready")
        result = nodehosts_dump(*diff)
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        assert "match a fresh LIST" in result.stderr

        # The daemon's token is revoked: it keeps serving what it had, and falls behind.
        api.revoke(TOKEN)
        api.drop_watches()
        wait_until(
            lambda: [e for e in d.events_named("api_error") if e.get("reason") == "unauthorized"],
            timeout=15,
            what="the daemon's 401",
        )
        api.delete_object("nodes", "worker-0")
        api.add_object("nodes", lab_node("worker-5", "10.240.0.105"))
        result = nodehosts_dump(*diff)
        assert result.returncode == 1, result.stderr
        changes = [line for line in result.stdout.splitlines() if line.startswith(("+", "-"))]
        assert changes[0].startswith("--- daemon generation 1 rv ")
        assert changes[1] == f"+++ list rv {api.resource_version}"
        assert sorted(changes[2:]) == [
            "+10.240.0.105 worker-5.node.internal worker-5",
            f"-{WORKER_0}",
        ]
        assert "1 stale line(s) (-), 1 missing line(s) (+)" in result.stderr

        # Settings that differ from the daemon's are pointed out: they make a diff lie.
        result = nodehosts_dump(*diff, "--domain", "lab")
        assert "settings differ from the daemon's: domain (daemon 'node.internal'" in result.stderr
        assert d.stop()[0] == 0

    result = nodehosts_dump(*diff)
    assert result.returncode == 2
    assert "cannot diff" in result.stderr


# --- saved records across a restart with the API down


def test_a_restart_with_the_api_down_serves_the_saved_records_over_dns(
    api: FakeApiServer, tmp_path: Path, sockets: Path
) -> None:
    """Saved records are answered at once, marked stale, the hosts file untouched; the first
    sync then replaces them and only that makes the service ready."""
    hosts = tmp_path / "nodes.hosts"
    state = tmp_path / "state"
    control = sockets / "control.sock"
    args = ("--hosts-file", str(hosts), "--state-dir", str(state), "--control-socket", str(control))
    listen = {"dns": "127.0.0.1", "metrics": "127.0.0.1"}
    daemon, ports = start_listening_daemon(api, tmp_path / "first", *args, **listen, token=TOKEN)
    dns_port = ports.dns
    with daemon:
        wait_for_answer(dns_port, "worker-0.node.internal", ["10.240.0.101"])
        saved = json.loads(
            wait_until(
                lambda: read_text_or_empty(state / "records.json"),
                timeout=10,
                what="the saved state",
            )
        )
        assert [h["names"][0] for h in saved["hosts"]] == [
            "controller-0.node.internal",
            "worker-0.node.internal",
        ]
        assert daemon.stop()[0] == 0
    file_before = hosts.read_bytes()

    api.outage()
    api.add_object("nodes", lab_node("worker-2", "10.240.0.160"))
    with NotifySocket() as manager:
        # New ports: the first daemon's may have been taken since it stopped.
        daemon, ports = start_listening_daemon(
            api, tmp_path / "second", *args, **listen, token=TOKEN, env=manager.env()
        )
        dns_port, metrics_port = ports.dns, ports.metrics
        with daemon:
            wait_for_answer(dns_port, "worker-0.node.internal", ["10.240.0.101"], timeout=10)
            assert dig("127.0.0.1", dns_port, "worker-2.node.internal", "A") == []
            assert daemon.events_named("serving_saved_records")
            assert hosts.read_bytes() == file_before, "the hosts file is left as it is"

            base = f"http://127.0.0.1:{metrics_port}"
            text = http_get(f"{base}/metrics")[1]
            assert metric(text, "nodehosts_records_stale") == 1
            assert metric(text, "nodehosts_ready") == 0
            status, body = http_get(f"{base}/readyz")
            assert status == 503
            assert "serving saved records" in body
            result = dump_from_daemon(control, "--format", "json")
            assert result.returncode == 0, result.stderr
            live = json.loads(result.stdout)
            assert (live["stale"], live["ready"], live["synced"]) == (True, False, False)
            assert live["nodes"] == []
            assert [h["names"][0] for h in live["hosts"]] == [
                "controller-0.node.internal",
                "worker-0.node.internal",
            ]
            assert live["state_saved_at"].endswith("Z")

            # systemd: not ready, but told to wait, and why.
            extend = manager.wait_for("EXTEND_TIMEOUT_USEC", timeout=5)
            assert int(extend.fields["EXTEND_TIMEOUT_USEC"]) >= 30_000_000
            wait_until(
                lambda: [
                    s for s in manager.statuses() if s.startswith("serving saved records, API")
                ],
                timeout=15,
                what="a STATUS about the saved records",
            )
            assert not manager.with_key("READY")

            api.restore()
            wait_for_answer(
                dns_port, "worker-2.node.internal", ["10.240.0.160"], timeout=RECOVERY_TIMEOUT
            )
            manager.wait_for("READY", "1", timeout=10)
            wait_for_line(hosts, "10.240.0.160 worker-2.node.internal worker-2")
            assert daemon.events_named("saved_records_replaced")
            text = http_get(f"{base}/metrics")[1]
            assert metric(text, "nodehosts_records_stale") == 0
            live = json.loads(dump_from_daemon(control, "--format", "json").stdout)
            assert (live["stale"], live["ready"]) == (False, True)
            saved = wait_until(
                lambda: json.loads(read_text_or_empty(state / "records.json")),
                until=lambda doc: len(doc["hosts"]) == 3,
                timeout=10,
                what="the new records saved",
            )
            assert saved["generation"] == 2
            code, _ = daemon.stop()
    assert code == 0


def test_an_unusable_state_directory_is_logged_and_publishing_goes_on(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Saving is best effort: a state dir that cannot be written never stops the hosts file."""
    hosts = tmp_path / "nodes.hosts"
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    args = ("--hosts-file", str(hosts), "--state-dir", str(blocker / "state"))
    with start_daemon(api, tmp_path, *args, token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        wait_until(lambda: daemon.events_named("state_save_failed"), timeout=10, what="a log")
        api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
        wait_for_line(hosts, "10.240.0.150 worker-1.node.internal worker-1")
        assert daemon.stop()[0] == 0


def test_a_control_socket_that_cannot_be_bound_is_not_fatal(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """A bad control socket path is one error line; the daemon still publishes."""
    hosts = tmp_path / "nodes.hosts"
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ("--hosts-file", str(hosts), "--control-socket", str(blocker / "c.sock"))
    with start_daemon(api, tmp_path, *args, token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        assert daemon.events_named("control_socket_failed")
        assert daemon.stop()[0] == 0


def test_ready_waits_until_every_sink_has_the_records(api: FakeApiServer, tmp_path: Path) -> None:
    """DNS has the first sync but the hosts file cannot be written: not ready, retried, then
    READY=1 once the file is in place."""
    directory = tmp_path / "hosts"
    directory.mkdir()
    hosts = directory / "nodes.hosts"
    api.outage()
    with NotifySocket() as manager:
        daemon, dns_port = start_dns_daemon(
            api, tmp_path, "--hosts-file", str(hosts), token=TOKEN, env=manager.env()
        )
        with daemon:
            wait_until(lambda: daemon.events_named("api_error"), timeout=15, what="an api_error")
            directory.rmdir()
            api.restore()
            failed = wait_until(
                lambda: daemon.events_named("hosts_file_write_failed"),
                timeout=RECOVERY_TIMEOUT,
                what="the failed write",
            )
            assert failed[0]["retry_in"] == 5.0
            wait_for_answer(dns_port, "worker-0.node.internal", ["10.240.0.101"])
            assert not manager.with_key("READY")
            assert not daemon.events_named("ready")

            directory.mkdir()
            manager.wait_for("READY", "1", timeout=15)
            assert WORKER_0 in read_text_or_empty(hosts).splitlines()
            assert daemon.stop()[0] == 0
