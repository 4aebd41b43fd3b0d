"""`nodehosts demo` as a newcomer runs it: changes as lines, and commands that work."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from nodehosts.testing.simulation import describe_changes
from tests.helpers.dig import DigError, dig, query
from tests.helpers.net import bound_udp_socket, with_free_port
from tests.helpers.polling import wait_until


def test_describe_changes_names_joins_moves_and_leaves() -> None:
    """One sentence per name: joined with its address, moved from A to B, left (was A)."""
    before = {"worker-0": ("10.240.0.101",), "worker-1": ("10.240.0.121",)}
    after = {"worker-0": ("10.240.0.102",), "worker-2": ("10.240.0.150",)}
    assert describe_changes(before, after) == [
        ("moved", "worker-0 moved from 10.240.0.101 to 10.240.0.102"),
        ("left", "worker-1 left (was 10.240.0.121)"),
        ("joined", "worker-2 joined: 10.240.0.150"),
    ]
    assert describe_changes(after, after) == []


def start_demo(port: int) -> tuple[subprocess.Popen[str], int]:
    """`nodehosts demo` serving DNS on `port`, once it answers there; OSError(EADDRINUSE)
    when another process took the port first (the demo exits 2 with dns_listen_failed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nodehosts.cli", "demo", "--seed", "3",
         "--dns-listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "FORCE_COLOR": "1", "NO_COLOR": ""},
    )  # fmt: skip

    def answering() -> bool:
        try:
            query("127.0.0.1", port, "worker-0", timeout=1)
        except DigError:
            return False
        return True

    wait_until(
        lambda: process.poll() is not None or answering(),
        timeout=60,
        what=f"the demo to answer DNS on port {port}",
    )
    if process.poll() is not None:
        _, stderr = process.communicate()
        if "dns_listen_failed" in stderr and "in use" in stderr:
            raise OSError(errno.EADDRINUSE, f"port {port} was taken")
        raise AssertionError(f"the demo exited {process.returncode}:\n{stderr}")
    return process, port


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], int]]:
    process, port = with_free_port(start_demo)
    try:
        yield process, port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_until(process: subprocess.Popen[str], predicate, timeout: float = 30.0) -> list[str]:  # type: ignore[no-untyped-def]
    """The demo's stdout lines until one satisfies `predicate`."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if predicate(lines[-1]):
            return lines
    pytest.fail("demo never printed the expected line; got:\n" + "\n".join(lines))


def test_demo_prints_commands_that_work_against_it(
    demo: tuple[subprocess.Popen[str], int],
) -> None:
    """The printed dig and `nodehosts dump` lines, pasted as they are, answer from the demo;
    each change is one coloured line, never the whole file."""
    process, port = demo
    head = read_until(process, lambda line: line.endswith("--watch"))
    dig_line = next(line.strip() for line in head if line.strip().startswith("dig "))
    assert dig_line == f"dig @127.0.0.1 -p {port} worker-0 +short"
    dump_line = head[-2].strip()
    argv = shlex.split(dump_line)
    assert os.path.isabs(argv[0]), "the nodehosts executable by its full path"
    # The published set comes first; then the first change, coloured.
    lines = read_until(process, lambda line: " joined: " in line)
    assert "published:" in lines
    assert lines[-1].split(" ", 1)[1].startswith("\x1b[32mworker-")
    assert not any(line.startswith("---") or "node.internal" in line for line in lines)

    dumped = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert dumped.returncode == 0, dumped.stderr
    assert "10.240.0.101 worker-0.node.internal worker-0" in dumped.stdout.splitlines()
    assert dig("127.0.0.1", port, "worker-0", "A") == ["10.240.0.101"]


def test_demo_into_a_pipe_closed_later_stops_quietly() -> None:
    """`nodehosts demo | head -3`: once head is gone the demo stops, exit 141, no traceback."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "nodehosts.cli", "demo", "--seed", "5", "--dns-listen", ""],
        stdout=write_end, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write_end)
    try:
        with os.fdopen(read_end) as reader:
            head = [reader.readline() for _ in range(3)]
        assert head[0].startswith("nodehosts demo:")
        code = process.wait(timeout=60)  # the next change (every 3 s) meets the closed pipe
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    assert code == 141
    assert process.stderr.read() == ""


def test_demo_on_a_dns_port_that_is_taken_is_one_line_and_exit_2() -> None:
    """Another process holds the demo's DNS port: one dns_listen_failed line naming the
    address, exit 2 (as `nodehosts run`), no traceback."""
    with bound_udp_socket("127.0.0.1") as holder:
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "nodehosts.cli", "demo", "--seed", "3", "--dns-listen", listen],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if "dns_listen_failed" in line]
    assert len(failed) == 1, result.stderr
    assert listen in failed[0]
