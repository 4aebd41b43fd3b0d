"""`nodehosts dump` as an operator sees it: a table on a terminal, -o wide/yaml/json/hosts,
`--watch` printing each change, quiet exits into closed pipes, one-line usage errors."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import nodehosts, nodehosts_dump, start_daemon
from tests.helpers.polling import wait_until
from tests.helpers.service import short_directory

TOKEN = "views-token"
WORKER_0 = "10.240.0.101 worker-0.node.internal worker-0"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN,
        lab_node("worker-0", "10.240.0.101", realistic=True),
        make_node("worker-1", addresses=[("Hostname", "worker-1")], ready=False),
    ) as server:
        yield server


@pytest.fixture
def kubeconfig(api: FakeApiServer, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)


def run_in_terminal(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run `nodehosts ARGS` with its stdout on a pseudo-terminal; (exit code, what it showed)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "nodehosts.cli", *args],
        stdout=slave, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": ""},
    )  # fmt: skip
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(master)
    code = process.wait(timeout=10)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def test_dump_on_a_terminal_is_a_table(kubeconfig: Path) -> None:
    """At a terminal, dump shows one row per node with why it is (not) published."""
    code, shown = run_in_terminal("dump", "--config", "", "--kubeconfig", str(kubeconfig))
    assert code == 0, shown
    rows = [line.split(None, 3) for line in shown.splitlines()]
    assert rows[0] == ["NAME", "ADDRESSES", "PUBLISHED", "REASON"]
    assert rows[1] == ["worker-0", "10.240.0.101", "yes", "-"]
    assert rows[2][:3] == ["worker-1", "<none>", "no"]
    assert "address" in rows[2][3]


def test_dump_piped_is_still_the_hosts_text(kubeconfig: Path) -> None:
    """Scripts reading dump's output keep getting hosts lines."""
    result = nodehosts_dump("--kubeconfig", str(kubeconfig))
    assert result.stdout == f"{WORKER_0}\n"


def test_dump_wide_adds_ready_schedulable_and_names(kubeconfig: Path) -> None:
    """-o wide: READY, SCHEDULABLE and the published names too."""
    result = nodehosts_dump("--kubeconfig", str(kubeconfig), "-o", "wide")
    assert result.returncode == 0, result.stderr
    header, worker0, worker1 = (line.split() for line in result.stdout.splitlines())
    assert header == [
        "NAME", "ADDRESSES", "PUBLISHED", "REASON", "READY", "SCHEDULABLE", "NAMES",
    ]  # fmt: skip
    assert worker0 == [
        "worker-0", "10.240.0.101", "yes", "-", "yes", "yes",
        "worker-0.node.internal,worker-0",
    ]  # fmt: skip
    assert worker1[0] == "worker-1"
    assert worker1[-3:] == ["no", "yes", "worker-1.node.internal,worker-1"]


def test_dump_yaml_is_the_json_report(kubeconfig: Path) -> None:
    """-o yaml carries the same report as -o json (and --format json, the old spelling)."""
    as_yaml = nodehosts_dump("--kubeconfig", str(kubeconfig), "-o", "yaml")
    as_json = nodehosts_dump("--kubeconfig", str(kubeconfig), "--format", "json")
    assert as_yaml.returncode == as_json.returncode == 0, as_yaml.stderr + as_json.stderr
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)


@pytest.mark.parametrize(
    "args",
    [
        ("dump", "-o", "json"),
        ("dump", "-o", "table"),
        ("dump", "-o", "hosts"),
        ("--help",),
        ("dump", "--help"),
    ],
    ids=" ".join,
)
def test_output_into_a_closed_pipe_ends_quietly(kubeconfig: Path, args: tuple[str, ...]) -> None:
    """`nodehosts dump -o json | head` with head gone: nothing on stderr, exit 141 (SIGPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    extra = ("--config", "", "--kubeconfig", str(kubeconfig)) if args[0] == "dump" else ()
    if "--help" in args:
        extra = ()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "nodehosts.cli", *args, *extra],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == ""
    if "--help" not in args:  # (argparse itself ignores a failed write of the help)
        assert result.returncode == 141


def test_a_bad_flag_value_is_one_line_and_a_hint() -> None:
    """`run --ttl abc`: the error and where to look, not 21 lines of usage."""
    result = nodehosts("run", "--ttl", "abc")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "nodehosts run: error: argument --ttl: invalid int value: 'abc'",
        "Try 'nodehosts run --help'.",
    ]


def test_diff_warning_names_unset_settings_without_python_none(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """A daemon without a label selector is 'unset' in the warning, never `None`."""
    api.add_object("nodes", lab_node("worker-2", "10.240.0.102"))
    with short_directory() as sockets:
        control = sockets / "control.sock"
        kubeconfig = api.write_kubeconfig(sockets / "kubeconfig", token=TOKEN)
        with start_daemon(api, tmp_path, "--control-socket", str(control), "--hosts-file",
                          str(tmp_path / "nodes.hosts"), token=TOKEN) as d:  # fmt: skip
            wait_until(lambda: d.events_named("ready"), timeout=15, what="ready")
            result = nodehosts_dump(
                "--diff", "--control-socket", str(control), "--kubeconfig", str(kubeconfig),
                "--label-selector", "kubernetes.io/hostname=worker-2",
            )  # fmt: skip
    warning = [line for line in result.stderr.splitlines() if "settings differ" in line]
    assert warning == [
        "nodehosts: warning: settings differ from the daemon's: "
        "label_selector (daemon unset, here 'kubernetes.io/hostname=worker-2')"
    ], result.stderr
    assert "None" not in result.stderr


def read_lines_until(stream: int, wanted: int, *, timeout: float) -> list[str]:
    """Lines from the fd `stream` until `wanted` of them arrived (or the timeout)."""
    buffer = b""
    deadline = time.monotonic() + timeout
    while buffer.count(b"\n") < wanted and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            data = os.read(stream, 65536)
            if not data:
                break
            buffer += data
    return buffer.decode().splitlines()


def test_dump_watch_prints_each_change_coloured(api: FakeApiServer, tmp_path: Path) -> None:
    """--watch: the records, then a green + line for a join and a red - line for a leave."""
    with short_directory() as sockets:
        control = sockets / "control.sock"
        with start_daemon(api, tmp_path, "--control-socket", str(control), "--hosts-file",
                          str(tmp_path / "nodes.hosts"), token=TOKEN) as d:  # fmt: skip
            wait_until(lambda: d.events_named("ready"), timeout=15, what="ready")
            watcher = subprocess.Popen(
                [sys.executable, "-m", "nodehosts.cli", "dump", "--config", "", "--watch",
                 "--control-socket", str(control)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**os.environ, "FORCE_COLOR": "1", "NO_COLOR": ""},
            )  # fmt: skip
            try:
                assert watcher.stdout is not None
                out = watcher.stdout.fileno()
                assert read_lines_until(out, 1, timeout=20) == [f"  {WORKER_0}"]
                api.add_object("nodes", lab_node("worker-3", "10.240.0.103"))
                joined = read_lines_until(out, 2, timeout=20)
                assert joined[0].startswith("\x1b[2m# ") and "generation 2" in joined[0]
                assert joined[1] == (
                    "\x1b[32m+ 10.240.0.103 worker-3.node.internal worker-3\x1b[0m"
                )
                api.delete_object("nodes", "worker-0")
                left = read_lines_until(out, 2, timeout=20)
                assert left[1] == f"\x1b[31m- {WORKER_0}\x1b[0m"
            finally:
                watcher.send_signal(signal.SIGINT)
                code = watcher.wait(timeout=10)
            assert code == 0
            assert watcher.stderr is not None
            assert "Traceback" not in watcher.stderr.read().decode()


def test_dump_watch_without_a_daemon_says_so(tmp_path: Path) -> None:
    """No daemon at the socket: one error line, exit 1."""
    result = nodehosts_dump("--watch", "--control-socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1
    assert result.stderr.startswith("nodehosts: error: dump --watch: no control socket at")
