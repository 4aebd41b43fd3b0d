"""CPU time of `Answerer.handle` and of the cold cache build, for comparing two checkouts.

Usage (from the root of each checkout, with the same interpreter, alternating):

    cd /tmp/before && python /path/to/bench/dns/handle_ab.py
    cd /work/wt/h-dns && python bench/dns/handle_ab.py

On a shared machine wall-clock timings (hotpath.py) swing by 2x between runs; the process's
CPU time (`time.process_time`, best of 40 runs of 20,000 calls) moves by ~2%. It imports the
checkout it runs in (the current directory), through the API of issue 14's `core/dns`
package or, before it, `core/answer.py`. Prints one line: build ms, us per query (one
question over and over, then 2000 names in turn as dnsperf asks them in run.py, then each
name's first question to a new table), the update after one Node changed at 5000 Nodes as
DnsService.update makes it (adopting), and a full build at 20,000 Nodes (best of 3).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd()))

import dns.message

from bench.dns.names import bench_hosts
from nodehosts.core.model import HostChanges, RecordSet

make: Callable[..., Any]
try:
    from nodehosts.core.dns.answer import Answerer
    from nodehosts.core.dns.zone import ZoneConfig

    def make(records: RecordSet, zone: Any, serial: int = 1, **previous: Any) -> Any:
        return Answerer.for_records(records, zone, serial=serial, **previous)

except ImportError:  # a checkout from before the split
    from nodehosts.core.answer import Answerer, ZoneConfig  # type: ignore[no-redef,attr-defined]  # old layout

    def make(records: RecordSet, zone: Any, serial: int = 1, **previous: Any) -> Any:
        return Answerer(records, zone, serial=serial, **previous)


def adopting_update(nodes: int) -> float:
    """Best CPU time of what DnsService.update does after one Node changed: an update from
    the previous answerer with the changed hosts, taking over its tables (adopt)."""
    records = bench_hosts(nodes)
    hosts = list(records.hosts)
    middle = len(hosts) // 2
    old = hosts[middle]
    new = dataclasses.replace(old, addresses=(ipaddress.ip_address("10.99.0.1"),))
    hosts[middle] = new
    changed = RecordSet(tuple(hosts))
    zone = ZoneConfig()
    answerer = make(records, zone)
    times = []
    for serial in range(2, 52):
        before, after = (records, changed) if serial % 2 else (changed, records)
        removed, added = (old, new) if serial % 2 else (new, old)
        changes = HostChanges(before=before, after=after, removed=(removed,), added=(added,))
        started = time.process_time()
        answerer = make(after, zone, serial, previous=answerer, changes=changes, adopt=True)
        times.append(time.process_time() - started)
    return min(times)


def main() -> None:
    records = bench_hosts(1000)
    zone = ZoneConfig()
    builds = []
    for _ in range(15):
        started = time.process_time()
        answerer = make(records, zone)
        builds.append(time.process_time() - started)
    name = records.hosts[500].names[0]
    queries = {
        "A": dns.message.make_query(name + ".", "A", use_edns=False).to_wire(),
        "A+EDNS": dns.message.make_query(name + ".", "A", use_edns=0, payload=1232).to_wire(),
        "NXDOMAIN": dns.message.make_query("nope.node.internal.", "A", use_edns=False).to_wire(),
    }
    handle = answerer.handle
    out = [f"build {min(builds) * 1e3:.1f} ms"]
    for label, query in queries.items():
        best = min(
            timeit.repeat(
                lambda query=query: handle(query, transport="udp", recursion_allowed=False),
                number=20_000,
                repeat=40,
                timer=time.process_time,
            )
        )
        out.append(f"{label} {best / 20_000 * 1e6:.3f} us")
    # As dnsperf asks in run.py: every name of 1000 nodes (FQDN and bare), shuffled.
    names = [name for host in records.hosts for name in host.names]
    random.Random(1).shuffle(names)
    mixed = [dns.message.make_query(name + ".", "A", use_edns=False).to_wire() for name in names]
    best = min(
        timeit.repeat(
            lambda: [handle(query, transport="udp", recursion_allowed=False) for query in mixed],
            number=10,
            repeat=30,
            timer=time.process_time,
        )
    )
    out.append(f"A, {len(mixed)} names in turn {best / (10 * len(mixed)) * 1e6:.3f} us")
    # Each name's first question to a new table (issue 16: replies are encoded when first
    # asked; before that, every reply was encoded by the build and this is a hit).
    firsts = []
    for _ in range(15):
        fresh = make(records, zone).handle
        started = time.process_time()
        for query in mixed:
            fresh(query, transport="udp", recursion_allowed=False)
        firsts.append(time.process_time() - started)
    out.append(f"A, first ask of each name {min(firsts) / len(mixed) * 1e6:.3f} us")
    big = bench_hosts(20_000)
    big_builds = []
    for _ in range(3):
        started = time.process_time()
        make(big, zone)
        big_builds.append(time.process_time() - started)
    out.append(f"build at 20,000 nodes {min(big_builds) * 1e3:.0f} ms")
    out.append(f"adopting update at 5000 nodes {adopting_update(5000) * 1e3:.3f} ms")
    print(f"{Path.cwd()}: " + ", ".join(out))


if __name__ == "__main__":
    main()
