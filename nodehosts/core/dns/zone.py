"""The zone we are authoritative for (its settings, checked once) and its SOA serials."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nodehosts.core.dns.wire import MAX_MESSAGE, name_to_wire
from nodehosts.core.model import IPAddress


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """The zone we are authoritative for, and how we answer."""

    domain: str = "node.internal"
    ttl: int = 30
    # TTL of NXDOMAIN/NODATA (the SOA's TTL and MINIMUM in those replies).
    negative_ttl: int = 5
    # The NS of the apex and the SOA MNAME; "" means ns.<domain>.
    nameserver: str = ""
    # Glue for `nameserver` when it is inside the zone and not itself a published name.
    nameserver_addresses: tuple[IPAddress, ...] = ()
    # The SOA RNAME as a mailbox (`hostmaster@example.org`) or a name; "" means hostmaster.<domain>.
    hostmaster: str = ""
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    # The EDNS payload size we announce and the most we send over UDP (DNS flag day 2020).
    max_udp_payload: int = 1232

    def __post_init__(self) -> None:
        domain = self.domain.strip().rstrip(".").lower()
        if not domain:
            raise ValueError("zone domain: must not be empty (we cannot own the root)")
        name_to_wire(domain)
        nameserver = (self.nameserver or f"ns.{domain}").rstrip(".").lower()
        name_to_wire(nameserver)
        hostmaster = (self.hostmaster or f"hostmaster.{domain}").rstrip(".").lower()
        hostmaster = hostmaster.replace("@", ".", 1)
        name_to_wire(hostmaster)
        for key in ("ttl", "negative_ttl", "refresh", "retry", "expire"):
            value = getattr(self, key)
            if not 0 <= value < 2**31:
                raise ValueError(f"zone {key}: {value} is not in 0..2147483647")
        if not 512 <= self.max_udp_payload <= MAX_MESSAGE:
            raise ValueError(f"zone max_udp_payload: {self.max_udp_payload} is not in 512..65535")
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "nameserver", nameserver)
        object.__setattr__(self, "hostmaster", hostmaster)
        addresses = tuple(ipaddress.ip_address(a) for a in self.nameserver_addresses)
        object.__setattr__(self, "nameserver_addresses", addresses)


def next_serial(previous: int | None, now: float) -> int:
    """The SOA serial for new content: the Unix time, or previous + 1 if that is not later."""
    serial = int(now) & 0xFFFFFFFF
    if previous is not None and not _serial_after(serial, previous):
        serial = (previous + 1) & 0xFFFFFFFF
    return serial


def _serial_after(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic: is `a` later than `b`?"""
    return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000
