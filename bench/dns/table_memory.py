"""Bytes per host of the DNS answer table, in process (tracemalloc), for comparing checkouts.

Usage (from the root of each checkout, with the same interpreter, like handle_ab.py):

    cd /tmp/before && python /path/to/bench/dns/table_memory.py [--hosts 20000]
    python bench/dns/table_memory.py

Hosts like the daemon publishes for realistic Nodes (`node-00042.node.internal` and
`node-00042`, one IPv4 address each). Counts what building an `Answerer` allocates and keeps:
the table and whatever caches the build fills (name encodings), after a gc; then the same
after every FQDN was asked once (replies cached, if the checkout caches on demand).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

import dns.message

from nodehosts.core.dns.answer import Answerer
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import Host, RecordSet


def realistic_hosts(count: int) -> RecordSet:
    hosts = [
        Host(
            names=(f"node-{i:05d}.node.internal", f"node-{i:05d}"),
            addresses=(ipaddress.ip_address(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"),),
            origin="node",
            node=f"node-{i:05d}",
        )
        for i in range(count)
    ]
    return RecordSet(tuple(sorted(hosts, key=lambda h: h.canonical)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20_000)
    args = parser.parse_args()
    records = realistic_hosts(args.hosts)
    queries = [
        dns.message.make_query(host.names[0], "A", use_edns=False).to_wire()
        for host in records.hosts
    ]
    gc.collect()
    tracemalloc.start()
    started = time.process_time()
    answerer = Answerer.for_records(records, ZoneConfig(), serial=1)
    built = time.process_time() - started
    gc.collect()
    table, _ = tracemalloc.get_traced_memory()
    for query in queries:
        answerer.handle(query, transport="udp", recursion_allowed=False)
    gc.collect()
    asked, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{Path.cwd()}: {args.hosts} hosts: table {table / args.hosts:.0f} bytes/host"
        f" ({table / 2**20:.1f} MiB), after every FQDN asked {asked / args.hosts:.0f} bytes/host"
        f" ({asked / 2**20:.1f} MiB); build {built * 1e3:.0f} ms CPU under tracemalloc"
    )


if __name__ == "__main__":
    main()
