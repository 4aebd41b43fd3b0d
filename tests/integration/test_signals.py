"""SIGINT and SIGTERM stop the demo and the daemon whatever their output streams do (issue 12):
with stdout and stderr on pipes whose reader went away, logging and printing fail with EPIPE,
and that used to keep the signal handler from ever stopping anything (only SIGKILL did)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.polling import wait_until

TOKEN = "signals-token"
# Generous: the point is that it exits by itself; bench-free, no speed claim here.
EXIT_CEILING = 15.0


def close_readers(process: subprocess.Popen[bytes]) -> None:
    """The reader of both pipes goes away, as when `| head` exits or a terminal closes."""
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    process.stderr.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_demo_stops_after_its_pipes_closed(signum: int) -> None:
    """It ends by itself at its next change line (a writer into a closed pipe, like `| head`)
    or, still running, on the signal; either way it exits and removes its temp dir."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nodehosts.cli", "demo", "--dns-listen", "", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        header = [process.stdout.readline().decode() for _ in range(2)]
        match = re.search(r"hosts file: (\S+)", "".join(header))
        assert match, header
        temp_dir = Path(match.group(1)).parents[1]
        close_readers(process)
        # The simulation changes the cluster every 3 s: the next change line hits EPIPE.
        time.sleep(7)
        if process.poll() is None:
            process.send_signal(signum)
        process.wait(timeout=EXIT_CEILING)
        assert not temp_dir.exists(), "the demo left its temp dir"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101")) as server:
        yield server


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_daemon_stops_on_a_signal_after_stderr_closed(
    api: FakeApiServer, tmp_path: Path, signum: int
) -> None:
    hosts = tmp_path / "nodes.hosts"
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "nodehosts.cli", "run", "--config", ""),
            *("--kubeconfig", str(kubeconfig), "--hosts-file", str(hosts)),
            *("--control-socket", "", "--state-dir", "", "--log-format", "json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(hosts.is_file, timeout=30, what="the first hosts file")
        close_readers(process)
        for index in range(1, 4):  # every change is logged, into the closed pipe
            api.add_object("nodes", lab_node(f"worker-{index}", f"10.240.0.{110 + index}"))
        wait_until(
            lambda: "worker-3" in hosts.read_text(),
            timeout=30,
            what="publishing goes on with a closed stderr",
        )
        assert process.poll() is None
        process.send_signal(signum)
        assert process.wait(timeout=EXIT_CEILING) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
