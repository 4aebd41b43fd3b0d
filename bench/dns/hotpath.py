"""Per-query cost of Answerer.handle (the hot path) and of building the cache, without sockets.

Usage: python bench/dns/hotpath.py [--names 1000]

Prints microseconds per query for each kind of question, next to what dnslib's parse + build +
pack costs for the same question (the "parse and build per query" design), and the time to
build an Answerer for N nodes, and to update it after one Node changed (what a Node change
costs before it is answered).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dns.edns
import dns.message
import dnslib

from bench.dns.names import bench_hosts
from nodehosts.core.dns.answer import Answerer
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import RecordSet


def per_call(function: Callable[[], object], *, number: int = 100_000) -> float:
    """Best of 5 runs, in microseconds per call."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def dnslib_reply(query: bytes) -> bytes:
    """What a straightforward dnslib server does per query: parse, build, pack."""
    request = dnslib.DNSRecord.parse(query)
    reply = request.reply()
    reply.add_answer(
        dnslib.RR(request.q.qname, dnslib.QTYPE.A, rdata=dnslib.A("10.240.0.8"), ttl=30)
    )
    packed: bytes = reply.pack()
    return packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1000)
    args = parser.parse_args()
    records = bench_hosts(args.names)
    zone = ZoneConfig()

    builds = []
    for _ in range(5):
        started = time.perf_counter()
        answerer = Answerer.for_records(records, zone, serial=1)
        builds.append(time.perf_counter() - started)
    print(
        f"build for {args.names} nodes ({answerer.table.name_count} names): "
        f"{min(builds) * 1000:.1f} ms (best of 5)"
    )
    # What DnsService.update does after one Node changed: a rebuild reusing the previous one.
    hosts = list(records.hosts)
    hosts[len(hosts) // 2] = dataclasses.replace(
        hosts[len(hosts) // 2], addresses=(ipaddress.ip_address("10.99.0.1"),)
    )
    changed = RecordSet(tuple(hosts))
    rebuilds = []
    for serial in range(2, 12):
        started = time.perf_counter()
        answerer = Answerer.for_records(
            changed if serial % 2 else records, zone, serial=serial, previous=answerer
        )
        rebuilds.append(time.perf_counter() - started)
    print(f"update after one node changed: {min(rebuilds) * 1000:.1f} ms (best of 10)")
    # The daemon's record policy makes new (equal) Host objects on every publication.
    copies = [
        RecordSet(
            tuple(
                dataclasses.replace(
                    h, addresses=tuple(ipaddress.ip_address(str(a)) for a in h.addresses)
                )
                for h in (changed if serial % 2 else records).hosts
            )
        )
        for serial in range(12, 22)
    ]
    rebuilds = []
    for serial, copy in zip(range(12, 22), copies, strict=True):
        started = time.perf_counter()
        answerer = Answerer.for_records(copy, zone, serial=serial, previous=answerer)
        rebuilds.append(time.perf_counter() - started)
    print(
        f"update after one node changed, every Host a new equal object: "
        f"{min(rebuilds) * 1000:.1f} ms (best of 10)"
    )

    cookie = dns.edns.GenericOption(10, bytes(8))
    address = ipaddress.ip_address("10.240.0.8")
    cases = {
        "A, FQDN, no EDNS": dns.message.make_query("worker-7.node.internal", "A"),
        "A, FQDN, EDNS + cookie (like dig)": dns.message.make_query(
            "worker-7.node.internal", "A", use_edns=0, options=[cookie]
        ),
        "A, bare name, 0x20 case": dns.message.make_query("WoRkEr-7", "A"),
        "AAAA, NODATA": dns.message.make_query("worker-7.node.internal", "AAAA"),
        "A, NXDOMAIN": dns.message.make_query("nope.node.internal", "A"),
        "PTR": dns.message.make_query(address.reverse_pointer, "PTR"),
        "not ours -> Forward (slow path)": dns.message.make_query("example.com", "A"),
    }
    handle = answerer.handle
    print(f"\n{'question':38} {'handle()':>10} {'dnslib parse+build+pack':>24}")
    for label, message in cases.items():
        wire = message.to_wire()
        ours = per_call(lambda wire=wire: handle(wire, transport="udp", recursion_allowed=True))
        reference = per_call(lambda wire=wire: dnslib_reply(wire), number=5_000)
        print(f"{label:38} {ours:8.2f} us {reference:21.1f} us")
    print(f"\npython {sys.version.split()[0]}, dnslib {dnslib.version}")


if __name__ == "__main__":
    main()
