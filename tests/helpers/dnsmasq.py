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
with another (tests.helpers.dnsserver, shared with CoreDNS). dnsmasq's log (stderr) is kept in
`log()` for failure messages. Extra dnsmasq
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
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.dnsserver import DnsServerProcess

__all__ = ["DNSMASQ", "Dnsmasq", "DnsmasqError", "dnsmasq_version", "stand_in_upstream"]

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


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


class Dnsmasq(DnsServerProcess):
    """One dnsmasq child process serving DNS on `address`:`port`."""

    NAME = "dnsmasq"
    ERROR = DnsmasqError
    IN_USE = "Address already in use"

    def __init__(
        self,
        *,
        hostsdir: Path | None = None,
        address: str = "127.0.0.1",
        args: Sequence[str] = (),
        log_queries: bool = False,
    ) -> None:
        super().__init__(address=address)
        self.hostsdir = hostsdir
        self.args = tuple(args)
        self.log_queries = log_queries

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
