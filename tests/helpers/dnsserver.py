"""A DNS server run as a child process on a loopback port, for the real dnsmasq and CoreDNS.

Contract: a subclass says how to run its server (`_command()`, and `_prepare()` for files that
name the port); `start()` picks a free port, starts the process (never daemonised, its output
in an unnamed file so a chatty server never blocks on a pipe) and returns once it answers a
UDP query. When the process exits first and its log has `IN_USE` (another process took the
port meanwhile), it is started again on another port, up to `PORT_ATTEMPTS` times; any other
exit raises `ERROR` with the log. `stop()` (and the end of a `with` block) terminates it,
then kills it after 5 s; the log stays readable in `log()`. `query`/`dig`/`wait_for_answer`
are tests.helpers.dig's against it, a timeout carrying the server's log.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self, Unpack

from tests.helpers import dig as _dig
from tests.helpers.net import free_port

__all__ = ["DnsServerProcess"]


class DnsServerProcess:
    """One DNS server child process serving on `address`:`port` (see the module)."""

    NAME: ClassVar[str]  # "dnsmasq": in messages
    ERROR: ClassVar[type[RuntimeError]] = RuntimeError
    IN_USE: ClassVar[str]  # what its log says when the port is taken
    START_TIMEOUT: ClassVar[float] = 10.0
    PORT_ATTEMPTS: ClassVar[int] = 5

    def __init__(self, *, address: str = "127.0.0.1") -> None:
        self.address = address
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._final_log = ""

    # --- what a subclass says

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Called with `self.port` chosen, before each start (write a config naming it)."""

    def _cwd(self) -> Path | None:
        return None

    def _start_failure(self, log: str) -> str:
        return f"{self.NAME} did not start: {' '.join(self._command())}\n{log}"

    # --- lifecycle

    def start(self) -> Self:
        """Start the server and wait until it answers; raises ERROR with its log otherwise."""
        if self._process is not None:
            raise self.ERROR("already started")
        for _ in range(self.PORT_ATTEMPTS):
            self.port = free_port(self.address)
            self._prepare()
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _reap)
            self._process = subprocess.Popen(
                self._command(),
                cwd=self._cwd(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
            )
            if self._wait_ready():
                return self
            log = self.log()
            self._reap()
            if self.IN_USE not in log:
                raise self.ERROR(self._start_failure(log))
        raise self.ERROR(f"{self.NAME} found no free port after {self.PORT_ATTEMPTS} attempts")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        self._reap()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The process's id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- use

    def query(self, name: str, qtype: str = "A", **how: Unpack[_dig.QueryOptions]) -> _dig.Response:
        """`tests.helpers.dig.query` against this server."""
        return _dig.query(self.address, self.port, name, qtype, **how)

    def dig(self, name: str, qtype: str = "A", **how: Unpack[_dig.QueryOptions]) -> list[str]:
        """`tests.helpers.dig.dig` against this server."""
        return _dig.dig(self.address, self.port, name, qtype, **how)

    def wait_for_answer(
        self, name: str, qtype: str, expected: Sequence[str], *, timeout: float = 5.0
    ) -> list[str]:
        """Poll until `name` `qtype` answers exactly `expected` (any order).

        On timeout the AssertionError carries the server's log.
        """
        try:
            return _dig.wait_for_answer(
                self.address, self.port, name, qtype, expected, timeout=timeout
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.NAME} log ---\n{self.log()}") from None

    def log(self) -> str:
        """Everything the server logged so far (kept after `stop`)."""
        if self._log is None:
            return self._final_log
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    # --- internals

    def _wait_ready(self) -> bool:
        """True once a UDP query gets any reply; False if the server exited first."""
        assert self._process is not None
        deadline = time.monotonic() + self.START_TIMEOUT
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    sock.sendto(_PROBE, (self.address, self.port))
                    sock.recv(512)
                except OSError:  # timeout, or ICMP port unreachable before it binds
                    continue
                return True
        self._reap()
        raise self.ERROR(f"{self.NAME} did not answer within {self.START_TIMEOUT} s\n{self.log()}")

    def _reap(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._final_log = self.log()
            self._log.close()
            self._log = None


def _probe_query() -> bytes:
    """A minimal DNS query (id 0x4e48, RD) for `ready.invalid. A`: any reply means serving."""
    header = struct.pack("!HHHHHH", 0x4E48, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label for label in (b"ready", b"invalid")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)


_PROBE = _probe_query()
