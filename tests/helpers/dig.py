"""Queries with the real `dig` (bind9-dnsutils), parsed into plain values.

Contract:
- `query(server, port, name, qtype)` sends exactly one query (one try, no retry, no search list)
  and returns a `Response`: the rcode name (`status`), the header flags, and the answer,
  authority and additional sections as `Record`s (the EDNS OPT pseudo-record is reported as
  `edns_udp_size`, not as a record). NXDOMAIN, NODATA, SERVFAIL and REFUSED are responses, not
  errors.
- `dig(...)` is the short form: the answer section's data strings in the server's order, like
  `dig +short` (so [] for NXDOMAIN, NODATA, SERVFAIL and REFUSED alike: use `query` to tell them
  apart). It, and whatever else passes options on to `query`, takes them as `QueryOptions`.
- No response at all (timeout, connection refused) raises `DigError` with dig's output.
- `options` are passed to dig as they are (`+norecurse`, `+bufsize=512`, `+noedns`, ...).
  For reverse lookups pass `reverse_name("10.240.0.101")` with qtype "PTR".
- `wait_for_answer(...)` polls `dig` until the answer equals the expected set (order ignored).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

from tests.helpers.polling import wait_until

__all__ = [
    "DigError",
    "QueryOptions",
    "Record",
    "Response",
    "dig",
    "query",
    "reverse_name",
    "wait_for_answer",
]

DIG = shutil.which("dig") or "/usr/bin/dig"

_HEADER = re.compile(r";; ->>HEADER<<- opcode: (?P<opcode>\S+), status: (?P<status>\S+), id:")
_FLAGS = re.compile(r";; flags:(?P<flags>[^;]*);")
_EDNS = re.compile(r"; EDNS: version: \d+, flags:[^;]*; udp: (?P<size>\d+)")
_SECTION = re.compile(r";; (?P<name>ANSWER|AUTHORITY|ADDITIONAL) SECTION:")


class DigError(RuntimeError):
    """dig got no response (or could not run); the message carries dig's own output."""


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record as dig prints it; `data` is the rdata text (`10.0.0.1`, `a.b.`)."""

    name: str
    ttl: int
    rclass: str
    rtype: str
    data: str


@dataclass(frozen=True, slots=True)
class Response:
    """One DNS response as dig saw it."""

    status: str  # NOERROR, NXDOMAIN, SERVFAIL, REFUSED, NOTIMP, FORMERR, ...
    flags: frozenset[str]  # header flags: qr aa tc rd ra ad cd
    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]
    # The responder's EDNS UDP payload size, None when the response carried no OPT record.
    edns_udp_size: int | None

    def data(self, rtype: str | None = None) -> list[str]:
        """The answer section's data, optionally only of one record type."""
        return [r.data for r in self.answer if rtype is None or r.rtype == rtype.upper()]


class QueryOptions(TypedDict, total=False):
    """How `query` asks, for the functions that pass them on (defaults: `query`'s)."""

    tcp: bool
    timeout: int
    options: Sequence[str]


def reverse_name(address: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an address, for PTR queries."""
    return ipaddress.ip_address(address).reverse_pointer


def query(
    server: str,
    port: int,
    name: str,
    qtype: str = "A",
    *,
    tcp: bool = False,
    timeout: int = 2,
    options: Sequence[str] = (),
) -> Response:
    """Ask `server`:`port` one question with the real dig and parse what came back."""
    command = [
        DIG,
        f"@{server}",
        "-p",
        str(port),
        "+tries=1",
        "+retry=0",
        f"+time={max(1, timeout)}",
        "+nosearch",
        "+noall",
        "+comments",
        "+answer",
        "+authority",
        "+additional",
        "+tcp" if tcp else "+notcp",
        *options,
        "-q",
        name,
        "-t",
        qtype,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout + 10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DigError(f"{' '.join(command)}: {exc}") from exc
    output = done.stdout + done.stderr
    header = _HEADER.search(done.stdout)
    if done.returncode != 0 or header is None:
        raise DigError(f"{' '.join(command)} exited {done.returncode}:\n{output.strip()}")
    return _parse(done.stdout, status=header["status"])


def dig(
    server: str, port: int, name: str, qtype: str = "A", **how: Unpack[QueryOptions]
) -> list[str]:
    """The answer section's data, like `dig +short`: [] when there is no answer."""
    return query(server, port, name, qtype, **how).data()


def wait_for_answer(
    server: str,
    port: int,
    name: str,
    qtype: str,
    expected: Iterable[str],
    *,
    timeout: float = 5.0,
) -> list[str]:
    """Poll until the answer is exactly `expected` (in any order); return it."""
    want = sorted(expected)
    return wait_until(
        lambda: dig(server, port, name, qtype),
        until=lambda got: sorted(got) == want,
        timeout=timeout,
        what=f"{name} {qtype} @{server}:{port} to answer {want}",
    )


def _parse(stdout: str, *, status: str) -> Response:
    flags_match = _FLAGS.search(stdout)
    flags = frozenset(flags_match["flags"].split()) if flags_match else frozenset()
    edns = _EDNS.search(stdout)
    sections: dict[str, list[Record]] = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    current: list[Record] | None = None
    for line in stdout.splitlines():
        section = _SECTION.match(line)
        if section:
            current = sections[section["name"]]
            continue
        if not line.strip():
            continue
        if line.startswith(";"):
            # Any other comment ends a section (e.g. the OPT pseudo-section, the footer).
            if not line.startswith(";; "):
                current = None
            continue
        if current is not None:
            owner, ttl, rclass, rtype, *rest = line.split(None, 4)
            current.append(Record(owner, int(ttl), rclass, rtype, rest[0] if rest else ""))
    return Response(
        status=status,
        flags=flags,
        answer=tuple(sections["ANSWER"]),
        authority=tuple(sections["AUTHORITY"]),
        additional=tuple(sections["ADDITIONAL"]),
        edns_udp_size=int(edns["size"]) if edns else None,
    )
