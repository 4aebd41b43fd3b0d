"""The control socket: the running daemon answers `nodehosts dump --from daemon` and friends.

Contract:

- Transport: an AF_UNIX stream socket at a path, mode 0660 (owner and group; the socket's
  permissions are the access control, set before it accepts anything). One JSON object per
  line in, one JSON object per line out, in order; a client may send several requests on one
  connection. A request is ``{"command": NAME, ...arguments}``; the answer is
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "why"}``. Malformed input gets an
  error answer (and a line too long to read also closes the connection); a failing handler is
  logged and answered with an error, and never stops the server.
- `ControlServer(path, handlers)`: `handlers` maps command names to callables taking the
  request's arguments (a dict without "command") and returning JSON-able data, or an awaitable
  of it. ``ping`` is built in and answers the version, the pid and the command names. `start()`
  refuses (ControlError) to take over a path another live process is listening on, or one
  that is not a socket; a stale socket file from a crash is replaced. The parent directory is
  created (one level, mode 0755) when missing, like systemd's RuntimeDirectory would. `stop()`
  removes the socket file if it is still ours.
- `request(path, command, **arguments)` is the blocking client the CLI uses. It raises
  `DaemonUnavailable` when nothing answers at the path (no socket, refused, permission denied,
  timeout: the caller may fall back to a fresh LIST), and `CommandFailed` with the daemon's
  message when the daemon answered with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from nodehosts import __version__
from nodehosts.adapters.streams import close_server

__all__ = [
    "CommandFailed",
    "ControlError",
    "ControlServer",
    "DaemonUnavailable",
    "Handler",
    "request",
]

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], Any | Awaitable[Any]]

SOCKET_MODE = 0o660
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_PATH_BYTES = 107
# One request line; requests are tiny, so anything longer is garbage or abuse.
MAX_REQUEST_BYTES = 64 * 1024
# One answer line; a dump of 5000 nodes is a few MB.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# A client that sends nothing for this long is disconnected.
IDLE_TIMEOUT = 60.0


class ControlError(Exception):
    """The control socket cannot be served or used; the message says why."""


class DaemonUnavailable(ControlError):
    """No daemon answers at the socket path (not running, no access, or not responding)."""


class NoAccess(ControlError):
    """The socket is there but this user may not connect (not in the daemon's group)."""


# The group the package's unit runs the daemon as (systemd/nodehosts.service, Group=).
CONTROL_GROUP = "nodehosts"


class CommandFailed(ControlError):
    """The daemon answered, with an error."""


def _check_path_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise ControlError(
            f"control socket path {path} is longer than {MAX_PATH_BYTES} bytes (AF_UNIX limit)"
        )


def _is_answering(path: Path) -> bool:
    """Whether some process accepts connections at the socket `path` right now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
        return True


class ControlServer:
    """Serves `handlers` on the AF_UNIX socket at `path`; see the module docstring."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self._path = Path(path)
        self._handlers: dict[str, Handler] = {"ping": self._ping, **handlers}
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def path(self) -> Path:
        return self._path

    async def start(self) -> None:
        path = self._path
        _check_path_length(path)
        try:
            path.parent.mkdir(mode=0o755, exist_ok=True)
        except OSError as error:
            raise ControlError(
                f"control socket directory {path.parent}: {error.strerror}"
            ) from None
        self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(os.fspath(path))
            # Before listen(): until then a connect is refused, so no client ever reaches the
            # socket under the umask's mode.
            os.chmod(path, SOCKET_MODE)
            info = os.stat(path)
            self._inode = (info.st_dev, info.st_ino)
            self._server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=MAX_REQUEST_BYTES
            )
        except OSError as error:
            sock.close()
            raise ControlError(f"control socket {path}: {error.strerror or error}") from None
        log.info("control_listening", path=str(path), mode=oct(SOCKET_MODE))

    @staticmethod
    def _remove_stale(path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlError(f"control socket {path}: exists and is not a socket")
        if _is_answering(path):
            raise ControlError(f"control socket {path}: another process is listening on it")
        log.info("control_stale_socket_removed", path=str(path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    async def stop(self) -> None:
        if self._server is None:
            return
        await close_server(self._server, self._connections)
        self._server = None
        # Only our own socket: another daemon may have replaced it meanwhile.
        with contextlib.suppress(OSError):
            info = os.lstat(self._path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self._path)

    def _ping(self, _arguments: dict[str, Any]) -> dict[str, Any]:
        return {"version": __version__, "pid": os.getpid(), "commands": sorted(self._handlers)}

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):  # not wait_for: gh-86296
                        line = await reader.readline()
                except ValueError:  # longer than the stream limit: cannot resync, give up
                    await self._send(writer, _error("request line too long"))
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await self._send(writer, await self._answer(line))
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug of ours: one structured line, the server goes on
            log.exception("control_connection_failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return _error("request is not JSON")
        except RecursionError:
            return _error("request is not JSON: nested too deeply")
        if not isinstance(message, dict) or not isinstance(message.get("command"), str):
            return _error('request must be an object with a "command" string')
        command = message.pop("command")
        handler = self._handlers.get(command)
        if handler is None:
            return _error(
                f"unknown command {command!r}; known: {', '.join(sorted(self._handlers))}"
            )
        started = time.monotonic()
        try:
            result = handler(message)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:  # a handler bug must not take the socket down
            log.exception("control_command_failed", command=command)
            return _error(f"{command} failed: {error}")
        log.debug("control_command", command=command, seconds=round(time.monotonic() - started, 6))
        return {"ok": True, "result": result}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        try:
            data = json.dumps(response, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as error:
            why = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            log.error("control_response_not_json", error=why)
            data = json.dumps(_error(f"internal error: result is not JSON: {why}"))
        writer.write(data.encode("utf-8") + b"\n")
        await writer.drain()


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def request(path: Path, command: str, *, timeout: float = 10.0, **arguments: Any) -> Any:
    """Send one command to the daemon at `path` and return its result (blocking)."""
    path = Path(path)
    _check_path_length(path)
    deadline = time.monotonic() + timeout
    payload = json.dumps({**arguments, "command": command}).encode("utf-8") + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            raise DaemonUnavailable(f"no control socket at {path}") from None
        except ConnectionRefusedError:
            raise DaemonUnavailable(f"no daemon listening on {path} (stale socket)") from None
        except PermissionError:
            raise NoAccess(
                f"no access to {path}: run as root or a member of group {CONTROL_GROUP}"
            ) from None
        except TimeoutError:
            raise DaemonUnavailable(f"daemon at {path} did not accept in {timeout} s") from None
        except OSError as error:
            if error.errno in (errno.ENOTSOCK, errno.ENOTDIR, errno.ECONNREFUSED):
                raise DaemonUnavailable(f"{path}: {error.strerror}") from None
            raise
        buffer = bytearray()
        try:
            sock.sendall(payload)
            while not buffer.endswith(b"\n"):
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise DaemonUnavailable(f"daemon at {path} closed the connection")
                buffer += chunk
                if len(buffer) > MAX_RESPONSE_BYTES:
                    raise ControlError(f"answer from {path} is larger than {MAX_RESPONSE_BYTES} B")
        except TimeoutError:
            raise DaemonUnavailable(f"daemon at {path} did not answer in {timeout} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise DaemonUnavailable(f"daemon at {path} closed the connection") from None
    try:
        response = json.loads(buffer)
    except ValueError:
        raise ControlError(f"answer from {path} is not JSON") from None
    if not isinstance(response, dict) or "ok" not in response:
        raise ControlError(f"answer from {path} is not a control response")
    if not response["ok"]:
        raise CommandFailed(str(response.get("error", "unknown error")))
    return response.get("result")
