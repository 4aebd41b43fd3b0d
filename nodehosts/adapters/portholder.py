"""Who holds a local port: for the one log line when a listen address is already taken.

Contract: `port_holder(host, port)` names the process that has a socket bound to `port` (on
`host` or on the wildcard address), as "NAME (pid N)", when /proc shows it: the socket's inode
from /proc/net/{tcp,udp}[6], then the process whose /proc/PID/fd links to it. An unprivileged
process cannot read another user's fds, so the answer is often None; `likely_holders(port)`
then gives the hint an operator needs (on the LB, port 53 is usually CoreDNS,
systemd-resolved or dnsmasq). Never raises: this runs on the way out of a failed start.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

__all__ = ["likely_holders", "port_holder"]

_PROC = Path("/proc")
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


def port_holder(host: str, port: int, *, proc: Path = _PROC) -> str | None:
    """'NAME (pid N)' of a process with a listening socket on host:port, or None."""
    try:
        inodes = _socket_inodes(host, port, proc)
        return _process_of(inodes, proc) if inodes else None
    except OSError:
        return None


def likely_holders(port: int) -> str:
    """What usually holds `port` on a Linux host, for when /proc does not tell."""
    if port == 53:
        return "CoreDNS, systemd-resolved or dnsmasq (see `ss -lntup 'sport = :53'` as root)"
    return f"see `ss -lntup 'sport = :{port}'` as root"


def _socket_inodes(host: str, port: int, proc: Path) -> set[str]:
    wanted = _addresses(host)
    inodes: set[str] = set()
    for table, state in (("tcp", _TCP_LISTEN), ("udp", _UDP_UNCONNECTED)):
        for suffix in ("", "6"):
            path = proc / "net" / f"{table}{suffix}"
            try:
                lines = path.read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] != state:
                    continue
                address, _, hex_port = fields[1].partition(":")
                if int(hex_port, 16) == port and _decode(address) in wanted:
                    inodes.add(fields[9])
    return inodes


def _addresses(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """host and the wildcard addresses that also cover it (a socket on 0.0.0.0 takes 127.0.0.1)."""
    wildcards = {ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")}
    try:
        return {ipaddress.ip_address(host or "0.0.0.0"), *wildcards}
    except ValueError:
        return wildcards


def _decode(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net's address: the bytes of each 32-bit word in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(swapped)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _process_of(inodes: set[str], proc: Path) -> str | None:
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    name = (entry / "comm").read_text().strip()
                    return f"{name} (pid {entry.name})"
        except OSError:  # another user's process, or gone meanwhile
            continue
    return None
