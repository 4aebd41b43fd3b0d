"""The failures an operator meets first, with the real daemon as a process: each ends in one
clear line and the documented outcome, never a traceback.

- `--dns-listen` on a port another DNS server holds (CoreDNS, systemd-resolved or dnsmasq on
  the LB's :53): one `dns_listen_failed` line naming the address and the holder, exit 2.
- The metrics port taken: `metrics_listen_failed`, and the daemon publishes on.
- `nodehosts dump` by a user outside the daemon's group: "run as root or a member of group
  nodehosts", exit 2.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.adapters.portholder import likely_holders
from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import start_daemon
from tests.helpers.dnsmasq import Dnsmasq
from tests.helpers.files import wait_for_line
from tests.helpers.net import bound_tcp_socket, with_free_port
from tests.helpers.polling import wait_until
from tests.helpers.skips import skip_unless_ci

TOKEN = "first-failures-token"
WORKER_0 = "10.240.0.101 worker-0.node.internal worker-0"
NOBODY = 65534
AS_ROOT = "sudo .venv/bin/python -m pytest tests/integration/test_first_failures.py"
# Root without any capability: file and /proc access as a plain user with uid 0.
WITHOUT_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
HOLD_PORT = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", int(sys.argv[1])))
print("bound", flush=True)
time.sleep(120)
"""


def hold_port_as_nobody(port: int) -> tuple[subprocess.Popen[str], int]:
    """A process of user nobody holding UDP 127.0.0.1:`port`; OSError(EADDRINUSE) when another
    process took the port first."""
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c", HOLD_PORT, str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        user=NOBODY, group=NOBODY, extra_groups=[],
    )  # fmt: skip
    assert holder.stdout is not None
    if holder.stdout.readline() != "bound\n":
        _, stderr = holder.communicate()
        if "Address already in use" in stderr:
            raise OSError(errno.EADDRINUSE, f"port {port} was taken")
        raise AssertionError(f"the port holder failed:\n{stderr}")
    return holder, port


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101")) as server:
        yield server


def test_a_dns_port_held_by_dnsmasq_is_one_line_naming_it_and_exit_2(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """dnsmasq holds 127.0.0.1:PORT: exit 2 (configuration), one dns_listen_failed line with
    the address and "dnsmasq (pid N)", no traceback."""
    with Dnsmasq() as holder:
        listen = f"127.0.0.1:{holder.port}"
        with start_daemon(api, tmp_path, "--dns-listen", listen, token=TOKEN) as daemon:
            code = daemon.process.wait(timeout=30)
            log = daemon.log_text()
            (failed,) = daemon.events_named("dns_listen_failed")
        assert holder.pid is not None
        assert code == 2, log
        assert failed["address"] == listen
        assert failed["holder"] == f"dnsmasq (pid {holder.pid})", failed
        assert failed["level"] == "error"
        assert "Traceback" not in log, log


def test_a_dns_port_whose_holder_cannot_be_seen_gets_a_hint(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """The port is held by another user's process, which the daemon may not inspect (as the
    nodehosts user cannot see root's CoreDNS): the line says so and how to find out."""
    if os.geteuid() != 0:
        skip_unless_ci("runs a port holder as nobody", how=AS_ROOT)
    holder, port = with_free_port(hold_port_as_nobody)
    try:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
        result = subprocess.run(
            [
                *WITHOUT_CAPABILITIES, sys.executable, "-m", "nodehosts.cli", "run",
                "--log-format", "json", "--config", "", "--kubeconfig", str(kubeconfig),
                "--control-socket", "", "--state-dir", "", "--dns-listen", f"127.0.0.1:{port}",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failed = [event for event in events if event["event"] == "dns_listen_failed"]
    assert result.returncode == 2, result.stderr
    assert len(failed) == 1, result.stderr
    assert failed[0]["address"] == f"127.0.0.1:{port}"
    assert failed[0]["holder"] == "unknown"
    assert f"ss -lntup 'sport = :{port}'" in failed[0]["hint"]
    assert "Traceback" not in result.stderr


def test_the_hint_for_port_53_names_the_usual_holders() -> None:
    """On the LB, :53 is CoreDNS, systemd-resolved or dnsmasq."""
    assert "CoreDNS, systemd-resolved or dnsmasq" in likely_holders(53)


def test_a_metrics_port_that_is_taken_is_logged_and_the_daemon_runs_on(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Another process listens on the metrics port: metrics_listen_failed naming it; the hosts
    file is still published and SIGTERM still ends it with 0."""
    hosts = tmp_path / "nodes.hosts"
    with bound_tcp_socket() as taken:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        args = ("--hosts-file", str(hosts), "--metrics-listen", listen)
        with start_daemon(api, tmp_path, *args, token=TOKEN) as daemon:
            wait_for_line(hosts, WORKER_0)
            (failed,) = wait_until(
                lambda: daemon.events_named("metrics_listen_failed"),
                timeout=20,
                what="metrics_listen_failed",
            )
            assert failed["address"] == listen
            assert daemon.process.poll() is None
            assert daemon.stop(timeout=30)[0] == 0


def test_dump_by_a_user_outside_the_group_says_how_to_get_access(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """The control socket is 0660, here owned by nobody:nogroup (standing in for the nodehosts
    group): a user in neither gets "run as root or a member of group nodehosts" and exit 2; the
    same user in the group gets the dump. The user is root without capabilities (setpriv), so
    the interpreter under /root stays readable."""
    if os.geteuid() != 0:
        skip_unless_ci("needs to drop root's capabilities (setpriv)", how=AS_ROOT)
    control = tmp_path / "control.sock"
    hosts = tmp_path / "nodes.hosts"
    args = ("--hosts-file", str(hosts), "--control-socket", str(control))
    with start_daemon(api, tmp_path, *args, token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        wait_until(control.exists, timeout=20, what="the control socket")
        assert control.stat().st_mode & 0o777 == 0o660
        os.chown(control, NOBODY, NOBODY)
        dump = [
            sys.executable, "-m", "nodehosts.cli", "dump", "--config", "",
            "--from", "daemon", "--control-socket", str(control),
        ]  # fmt: skip
        outsider = subprocess.run(
            [*WITHOUT_CAPABILITIES, *dump],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        member = subprocess.run(
            ["setpriv", f"--groups={NOBODY}", *WITHOUT_CAPABILITIES[1:], *dump],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert daemon.stop(timeout=30)[0] == 0
    assert outsider.returncode == 2, outsider.stderr
    assert "run as root or a member of group nodehosts" in outsider.stderr
    assert "Traceback" not in outsider.stderr
    assert (member.returncode, member.stderr) == (0, ""), member.stderr
    assert WORKER_0 in member.stdout
