"""Per-change cost of the record policy and the CSR approver's Node index (issue 12).

Usage (from the repository root; either interpreter):

    .venv/bin/python bench/core/policy_rebuild.py [--nodes 5000] [--changes 40]

Both run on the event loop thread after every change of the Nodes: `build_publication` in
every publish, `NodeIndex.build` in every publish when --approve-serving-csrs is on (with a
second, cluster-wide view of the Nodes while --label-selector limits publishing). A change is
one Node's new address; everything else is the same objects, as in the daemon. Prints the
median and the maximum in milliseconds.

Target: each well under the 100 ms p99 of a Node change reaching DNS (bench/README.md); on this
kind of shared 2-core machine, 5000 Nodes: build_publication ~40 ms median, NodeIndex.build
~15 ms (~18 ms with the cluster view).
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodehosts.core.csr import NodeIndex  # noqa: E402
from nodehosts.core.model import Host, NodeInfo  # noqa: E402
from nodehosts.core.records import RecordPolicy, build_publication  # noqa: E402


def node(index: int, address: str | None = None) -> NodeInfo:
    name = f"worker-{index}"
    own = address or f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"
    return NodeInfo(name, (("InternalIP", own), ("Hostname", name)), True, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=40)
    args = parser.parse_args()

    nodes = {n.name: n for n in (node(i) for i in range(args.nodes))}
    static = [Host(("lb-0",), (ipaddress.ip_address("10.240.0.40"),), "static")]
    policy = RecordPolicy()
    records = build_publication(nodes.values(), static, policy).records
    NodeIndex.build(nodes.values(), records, nodes.values())
    timings: dict[str, list[float]] = {"build_publication": [], "NodeIndex": [], "+cluster": []}
    for change in range(args.changes):
        changed = node(change, f"10.99.{change // 256 % 256}.{change % 256}")
        nodes[changed.name] = changed
        started = time.perf_counter()
        records = build_publication(nodes.values(), static, policy).records
        built = time.perf_counter()
        NodeIndex.build(nodes.values(), records)
        indexed = time.perf_counter()
        NodeIndex.build(nodes.values(), records, nodes.values())
        done = time.perf_counter()
        timings["build_publication"].append(built - started)
        timings["NodeIndex"].append(indexed - built)
        timings["+cluster"].append(done - indexed)
    for what, values in timings.items():
        median, worst = statistics.median(values) * 1000, max(values) * 1000
        print(f"{args.nodes} nodes {what:18} median {median:6.1f} ms  max {worst:6.1f} ms")


if __name__ == "__main__":
    main()
