"""DNS on the wire: type, class and RCODE numbers and names, name encoding, the question parser.

What every other module of the DNS engine (and the adapters that count or forward DNS
messages) agrees on about the bytes. No state besides the name-encoding caches.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

from nodehosts.core.model import IPAddress

Transport = Literal["udp", "tcp"]
# The reply as it goes on the wire (for TCP without the length prefix).
Reply: TypeAlias = bytes

TYPE_A, TYPE_NS, TYPE_SOA, TYPE_PTR, TYPE_AAAA, TYPE_OPT = 1, 2, 6, 12, 28, 41
TYPE_IXFR, TYPE_AXFR, TYPE_ANY = 251, 252, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
# An extended RCODE: its upper 8 bits travel in the OPT record, the header carries 0.
BADVERS = 16

# The header RCODEs we send, by name: also the label values of the DNS query metric.
RCODE_NAMES: Final[Mapping[int, str]] = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
}
# Query types common enough to be counted under their own name (the metric's label values);
# the rest are counted together, so that clients cannot grow the label set.
QTYPE_NAMES: Final[Mapping[int, str]] = {
    TYPE_A: "A",
    TYPE_NS: "NS",
    5: "CNAME",
    TYPE_SOA: "SOA",
    TYPE_PTR: "PTR",
    15: "MX",
    16: "TXT",
    TYPE_AAAA: "AAAA",
    33: "SRV",
    35: "NAPTR",
    43: "DS",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    TYPE_ANY: "ANY",
    257: "CAA",
}

# Largest DNS message over TCP (two-byte length prefix).
MAX_MESSAGE = 65535
# Where the question ends (header 12 + a name of at most 255 bytes + type and class 4).
LONGEST_QUESTION_END = 12 + 255 + 4

QUESTION_ONE = b"\x00\x01\x00\x00\x00\x00\x00"  # QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT high
OPT_HEAD = b"\x00\x00\x29"  # root owner name, TYPE OPT
EDNS_V0 = b"\x00\x00"  # extended RCODE 0, version 0
CLASS_IN_WIRE = b"\x00\x01"
ZONE_TRANSFERS = (TYPE_AXFR.to_bytes(2, "big"), TYPE_IXFR.to_bytes(2, "big"))
QNAME_POINTER = b"\xc0\x0c"  # the question's name always starts at offset 12
A_IN, AAAA_IN, PTR_IN, ANY_IN = (
    struct.pack(">HH", rtype, CLASS_IN) for rtype in (TYPE_A, TYPE_AAAA, TYPE_PTR, TYPE_ANY)
)


class BadName(ValueError):
    """A name that cannot be a DNS name on the wire (label empty or too long, not ASCII)."""


@functools.lru_cache(maxsize=256)
def name_to_wire(name: str) -> bytes:
    """`a.b.` or `a.b` -> uncompressed wire form, lower-cased; "" or "." is the root.

    Cached for the zone's few names (apex, nameserver, hostmaster), encoded with every table;
    `encode_name` is the same without the cache.
    """
    return encode_name(name)


def reverse_name(address: IPAddress) -> bytes:
    """The PTR owner name of an address, in wire form."""
    return encode_name(address.reverse_pointer)


ARPA = b"\x04arpa\x00"  # every reverse name ends so: a cheap test before parsing one
_IN_ADDR = b"\x07in-addr\x04arpa\x00"
_IP6 = b"\x03ip6\x04arpa\x00"


def reverse_address(name: bytes) -> IPAddress | None:
    """The address whose `reverse_name` is exactly `name` (lower-cased wire form), or None:
    the inverse of `reverse_name`, so that a table need not keep every reverse name."""
    if name.endswith(_IN_ADDR):
        labels, count, sep = name[: -len(_IN_ADDR)], 4, "."
    elif name.endswith(_IP6):
        labels, count, sep = name[: -len(_IP6)], 32, ":"
    else:
        return None
    parts: list[str] = []
    at = 0
    while at < len(labels):
        length = labels[at]
        parts.append(labels[at + 1 : at + 1 + length].decode("latin-1"))
        at += length + 1
    if len(parts) != count:
        return None
    parts.reverse()
    if count == 4:
        text = ".".join(parts)
    else:
        if any(len(part) != 1 for part in parts):
            return None
        text = sep.join("".join(parts[i : i + 4]) for i in range(0, 32, 4))
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # Only the canonical form (no leading zeros, lower-case hex) is the address's name.
    return address if reverse_name(address) == name else None


def encode_name(name: str) -> bytes:
    """`name_to_wire` without its cache: for the names of hosts, which the answer table keeps
    itself (a cache of 20,000 Nodes' names cost ~300 bytes a host beside the table's)."""
    text = name.rstrip(".").lower()
    if not text:
        return b"\x00"
    out = bytearray()
    for label in text.split("."):
        try:
            raw = label.encode("ascii")
        except UnicodeEncodeError:
            raise BadName(f"{name!r}: not ASCII") from None
        if not 0 < len(raw) < 64:
            raise BadName(f"{name!r}: empty label or label longer than 63 bytes")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise BadName(f"{name!r}: longer than 255 bytes")
    return bytes(out)


def in_zone(name: bytes, apex: bytes) -> bool:
    """Is the wire name at or below the wire name `apex` (on a label boundary)?"""
    cut = len(name) - len(apex)
    if cut < 0 or not name.endswith(apex):
        return False
    at = 0
    while at < cut:
        length = name[at]
        if length > 63:
            return False
        at += length + 1
    return at == cut


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One resource record of class IN."""
    return owner + struct.pack(">HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


def plain_question(query: bytes) -> bytes | None:
    """The first question as sent (name, type, class), from offset 12 of a message.

    None unless its name is plain (no compression pointer, the labels end inside `query`)
    and at most 255 bytes long (RFC 1035 2.3.4).
    """
    at, n = 12, len(query)
    while at < n:
        length = query[at]
        if length == 0:
            end = at + 5
            return query[12:end] if end <= n and end <= LONGEST_QUESTION_END else None
        if length > 63:
            return None
        at += length + 1
    return None
