"""The control socket, over a real AF_UNIX stream socket, with the CLI's blocking client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodehosts import __version__
from nodehosts.adapters.control import (
    CommandFailed,
    ControlError,
    ControlServer,
    DaemonUnavailable,
    request,
)

DUMP = {
    "generation": 3,
    "hosts": [{"names": ["worker-0.node.internal"], "addresses": ["10.0.0.1"]}],
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="nh-") as directory:
        yield Path(directory)


def failing(_arguments: dict[str, Any]) -> Any:
    raise RuntimeError("publication not built yet")


async def echo_later(arguments: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    return {"echo": arguments}


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[ControlServer]:
    control = ControlServer(
        short_dir / "run" / "control.sock",
        {"dump": lambda _arguments: DUMP, "fail": failing, "echo": echo_later},
    )
    await control.start()
    try:
        yield control
    finally:
        await control.stop()


async def call(server: ControlServer, command: str, **arguments: Any) -> Any:
    return await asyncio.to_thread(request, server.path, command, **arguments)


def raw_exchange(path: Path, data: bytes, answers: int) -> list[Any]:
    """Send raw bytes, read `answers` lines back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        reader = sock.makefile("rb")
        return [json.loads(reader.readline()) for _ in range(answers)]


async def test_dump_returns_the_daemons_answer(server: ControlServer) -> None:
    """The client gets exactly what the dump handler returned."""
    assert await call(server, "dump") == DUMP


async def test_async_handlers_and_arguments(server: ControlServer) -> None:
    """Handlers may be coroutines; the request's other keys are their arguments."""
    assert await call(server, "echo", diff=True) == {"echo": {"diff": True}}


async def test_ping_says_who_answers(server: ControlServer) -> None:
    """ping answers the version, pid and commands."""
    answer = await call(server, "ping")
    assert answer == {
        "version": __version__,
        "pid": os.getpid(),
        "commands": ["dump", "echo", "fail", "ping"],
    }


async def test_socket_is_group_accessible_only(server: ControlServer) -> None:
    """The socket's mode is 0660 whatever the umask."""
    info = os.stat(server.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660


async def test_mode_does_not_depend_on_umask(short_dir: Path) -> None:
    """A permissive umask still gives 0660."""
    old = os.umask(0)
    try:
        control = ControlServer(short_dir / "c.sock", {})
        await control.start()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(control.path).st_mode) == 0o660
    finally:
        await control.stop()


async def test_unknown_command_is_an_error_naming_the_known_ones(server: ControlServer) -> None:
    """A typo gets a useful message."""
    with pytest.raises(
        CommandFailed, match="unknown command 'dupm'; known: dump, echo, fail, ping"
    ):
        await call(server, "dupm")


async def test_a_failing_handler_answers_an_error_and_the_server_goes_on(
    server: ControlServer,
) -> None:
    """An exception in a handler becomes an error answer, not a dead socket."""
    with pytest.raises(CommandFailed, match="fail failed: publication not built yet"):
        await call(server, "fail")
    assert await call(server, "dump") == DUMP


async def test_several_requests_on_one_connection_and_bad_input(server: ControlServer) -> None:
    """Answers come in order, one line each; garbage lines get an error and do not close."""
    data = b'{"command": "ping"}\nnot json\n[1]\n\n{"command": "dump"}\n'
    answers = await asyncio.to_thread(raw_exchange, server.path, data, 4)
    assert answers[0]["ok"] is True
    assert answers[1] == {"ok": False, "error": "request is not JSON"}
    assert answers[2] == {"ok": False, "error": 'request must be an object with a "command" string'}
    assert answers[3] == {"ok": True, "result": DUMP}


async def test_deeply_nested_json_gets_an_error_answer(server: ControlServer) -> None:
    """Issue 12: nesting within the line limit raised RecursionError out of the connection
    (no answer, a traceback in the log). Now it is an error answer like any bad request, and
    nested arguments that do parse cannot break the answer either."""
    deep = b"[" * 60_000
    nested_arguments = b'{"command": "echo", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    data = deep + b"\n" + nested_arguments + b'\n{"command": "dump"}\n'
    answers = await asyncio.to_thread(raw_exchange, server.path, data, 3)
    assert answers[0] == {"ok": False, "error": "request is not JSON: nested too deeply"}
    # Depending on the Python version the parser's limit is below or above 3000 levels.
    if answers[1]["ok"]:
        assert json.dumps(answers[1]["result"]["echo"]["x"]).startswith("[[[[")
    else:
        assert "nested too deeply" in answers[1]["error"]
    assert answers[2] == {"ok": True, "result": DUMP}


async def test_an_overlong_request_is_refused(server: ControlServer) -> None:
    """A request line beyond the limit gets an error and the connection is closed."""
    data = b'{"command": "' + b"x" * 100_000 + b'"}\n'
    answers = await asyncio.to_thread(raw_exchange, server.path, data, 1)
    assert answers == [{"ok": False, "error": "request line too long"}]
    assert await call(server, "dump") == DUMP


async def test_stop_removes_the_socket(short_dir: Path) -> None:
    """After stop() the path is gone and clients see no daemon."""
    control = ControlServer(short_dir / "c.sock", {})
    await control.start()
    await control.stop()
    assert not control.path.exists()
    with pytest.raises(DaemonUnavailable, match="no control socket"):
        await asyncio.to_thread(request, control.path, "ping")


def test_no_socket_means_no_daemon(short_dir: Path) -> None:
    """A missing socket is DaemonUnavailable, so `dump --from auto` can fall back to LIST."""
    with pytest.raises(DaemonUnavailable, match="no control socket at"):
        request(short_dir / "absent.sock", "dump")


def test_a_stale_socket_means_no_daemon(short_dir: Path) -> None:
    """A socket file left by a crashed daemon is DaemonUnavailable too."""
    path = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    with pytest.raises(DaemonUnavailable, match="stale socket"):
        request(path, "dump")


async def test_start_replaces_a_stale_socket(short_dir: Path) -> None:
    """A daemon restarted after a crash takes over the leftover socket file."""
    path = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    control = ControlServer(path, {"dump": lambda _arguments: DUMP})
    await control.start()
    try:
        assert await call(control, "dump") == DUMP
    finally:
        await control.stop()


async def test_start_refuses_a_socket_another_daemon_serves(server: ControlServer) -> None:
    """A second daemon does not steal the first one's socket."""
    second = ControlServer(server.path, {})
    with pytest.raises(ControlError, match="another process is listening"):
        await second.start()
    assert await call(server, "dump") == DUMP


async def test_start_refuses_to_replace_a_regular_file(short_dir: Path) -> None:
    """A path that is not a socket is never deleted."""
    path = short_dir / "precious"
    path.write_text("data")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        await ControlServer(path, {}).start()
    assert path.read_text() == "data"


async def test_an_overlong_path_is_a_clear_error(short_dir: Path) -> None:
    """AF_UNIX's path limit is reported, not a cryptic OSError."""
    with pytest.raises(ControlError, match="longer than 107 bytes"):
        await ControlServer(short_dir / ("x" * 120), {}).start()


async def test_the_parent_directory_is_created(short_dir: Path) -> None:
    """/run/nodehosts is made when missing (one level)."""
    control = ControlServer(short_dir / "nodehosts" / "control.sock", {})
    await control.start()
    try:
        assert (short_dir / "nodehosts").is_dir()
    finally:
        await control.stop()


async def test_a_large_answer_arrives_whole(short_dir: Path) -> None:
    """A dump of thousands of nodes is one line, read completely."""
    big = {
        "nodes": [
            {"name": f"worker-{i}", "addresses": [f"10.1.{i // 250}.{i % 250}"]}
            for i in range(20000)
        ]
    }
    control = ControlServer(short_dir / "c.sock", {"dump": lambda _arguments: big})
    await control.start()
    try:
        assert await call(control, "dump") == big
    finally:
        await control.stop()
