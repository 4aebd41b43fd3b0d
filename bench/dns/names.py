"""The benchmark's data: N node hosts, the same as a hosts file (for dnsmasq) and a RecordSet.

Contract: `bench_hosts(n)` is deterministic: worker-0..worker-(n-1) in `domain`, each with one
IPv4 address from 10.240.0.0/16 and both the canonical and the bare name, like real nodes.
"""

from __future__ import annotations

import ipaddress

from nodehosts.core.model import Host, RecordSet

DOMAIN = "node.internal"


def bench_hosts(n: int, domain: str = DOMAIN) -> RecordSet:
    """n node hosts, sorted by canonical name as RecordSet requires."""
    hosts = [
        Host(
            names=(f"worker-{i}.{domain}", f"worker-{i}"),
            addresses=(ipaddress.ip_address(f"10.240.{i // 250}.{i % 250 + 1}"),),
            origin="node",
            node=f"worker-{i}",
        )
        for i in range(n)
    ]
    return RecordSet(tuple(sorted(hosts, key=lambda host: host.canonical)))


def hosts_file(records: RecordSet) -> str:
    """/etc/hosts format: one line per address with every name of the host."""
    return "".join(
        f"{address} {' '.join(host.names)}\n"
        for host in records.hosts
        for address in host.addresses
    )
