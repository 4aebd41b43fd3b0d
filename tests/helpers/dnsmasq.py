"""A real dnsmasq on a loopback port, as a consumer of hosts files or a stand-in DNS server.

Contract: `Dnsmasq(hostsdir=...)` is a context manager that starts `/usr/sbin/dnsmasq` as a child
process (never daemonised: --keep-in-foreground, no pid file) listening only on `address`
(127.0.0.1 by default, or ::1) at a free high port, and stops it on exit. It reads no
configuration of this machine (--conf-file=/dev/null, --no-hosts, --no-resolv: no upstream, so
names it does not know are answered from nowhere else). With `hostsdir` it serves every hosts
file in that directory and re-reads a file when inotify reports it written or renamed into
place; dot-files and names ending in `~` are ignored (so a writer's `.hosts.tmp` never shows).
Records that vanish from a re-read file are removed only since dnsmasq 2.88
(`dnsmasq_version()` tells). TTL of local answers: --local-ttl, default 0.

`start()` returns only once dnsmasq answers a query; a port taken in the meantime is retried
with another. dnsmasq's log (stderr) is kept in `log()` for failure messages. Extra dnsmasq
options go in `args` (e.g. ["--local-ttl=30", "--address=/lb-0.node.internal/10.240.0.40"]).

`stand_in_upstream(directory)` is the upstream of the forwarding tests, not started yet: a
Dnsmasq with upstream.example (one A) and big.example (100 A: truncated over UDP).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self, Unpack

from tests.helpers import dig as _dig
from tests.helpers.net import free_port

__all__ = ["DNSMASQ", "Dnsmasq", "DnsmasqError", "dnsmasq_version", "stand_in_upstream"]

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

_START_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5


class DnsmasqError(RuntimeError):
    """dnsmasq is missing, would not start, or stopped answering; the message has its log."""


def dnsmasq_version() -> tuple[int, int]:
    """(major, minor) of the installed dnsmasq, e.g. (2, 89)."""
    try:
        out = subprocess.run(
            [DNSMASQ, "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DnsmasqError(f"cannot run {DNSMASQ} (apt-get install dnsmasq-base): {exc}") from exc
    match = re.match(r"Dnsmasq version (\d+)\.(\d+)", out)
    if match is None:
        raise DnsmasqError(f"unexpected `dnsmasq --version` output: {out[:200]!r}")
    return int(match[1]), int(match[2])


class Dnsmasq:
    """One dnsmasq child process serving DNS on `address`:`port`."""

    def __init__(
        self,
        *,
        hostsdir: Path | None = None,
        address: str = "127.0.0.1",
        args: Sequence[str] = (),
        log_queries: bool = False,
    ) -> None:
        self.hostsdir = hostsdir
        self.address = address
        self.args = tuple(args)
        self.log_queries = log_queries
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._final_log = ""

    # --- lifecycle

    def start(self) -> Self:
        """Start dnsmasq and wait until it answers; raises DnsmasqError with its log otherwise."""
        if self._process is not None:
            raise DnsmasqError("already started")
        for _ in range(_PORT_ATTEMPTS):
            self.port = free_port(self.address)
            self._open_log()
            self._process = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
            )
            if self._wait_ready():
                return self
            log = self.log()
            self._reap()
            if "Address already in use" not in log:
                raise DnsmasqError(f"dnsmasq did not start: {' '.join(self._command())}\n{log}")
        raise DnsmasqError(f"dnsmasq found no free port after {_PORT_ATTEMPTS} attempts")

    @property
    def pid(self) -> int | None:
        """The dnsmasq process's id while it runs."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
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

        On timeout the AssertionError carries dnsmasq's log.
        """
        try:
            return _dig.wait_for_answer(
                self.address, self.port, name, qtype, expected, timeout=timeout
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- dnsmasq log ---\n{self.log()}") from None

    def log(self) -> str:
        """Everything dnsmasq logged so far (kept after `stop`)."""
        if self._log is None:
            return self._final_log
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- internals

    def _command(self) -> list[str]:
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        command = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            f"--port={self.port}",
            f"--listen-address={self.address}",
            "--bind-interfaces",
            # As root dnsmasq would switch to `nobody`, which cannot read pytest's 0700 temp
            # directories; as another user it cannot switch at all.
            f"--user={user}",
            f"--group={group}",
            "--log-facility=-",
        ]
        if self.log_queries:
            command.append("--log-queries")
        if self.hostsdir is not None:
            command.append(f"--hostsdir={self.hostsdir}")
        return [*command, *self.args]

    def _wait_ready(self) -> bool:
        """True once a UDP query gets any reply; False if dnsmasq exited first."""
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    sock.sendto(_PROBE, (self.address, self.port))
                    sock.recv(512)
                except OSError:  # timeout, or ICMP port unreachable before dnsmasq binds
                    continue
                return True
        self._reap()
        raise DnsmasqError(f"dnsmasq did not answer within {_START_TIMEOUT} s\n{self.log()}")

    def _open_log(self) -> None:
        # An unnamed file rather than a pipe: a chatty dnsmasq (--log-queries) can never block
        # on a full pipe. Closed by _reap, which keeps its text.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

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
    """A minimal DNS query (id 0x4e48, RD) for `ready.invalid. A`."""
    header = struct.pack("!HHHHHH", 0x4E48, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label for label in (b"ready", b"invalid")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)


_PROBE = _probe_query()


def stand_in_upstream(directory: Path) -> Dnsmasq:
    """An upstream for names that are not ours (not started: use it with `with`).

    upstream.example has one A (192.0.2.7); big.example has 100 A (192.0.2.1 to .100, from a
    hosts file written into `directory`), too many for one UDP answer; EDNS payload at most 1232.
    """
    (directory / "big").write_text("".join(f"192.0.2.{i} big.example\n" for i in range(1, 101)))
    return Dnsmasq(
        args=[
            "--host-record=upstream.example,192.0.2.7",
            f"--addn-hosts={directory / 'big'}",
            "--edns-packet-max=1232",
        ]
    )
