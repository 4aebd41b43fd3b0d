"""What the per-publication counts cost: `Metrics.observe_publication` (walks every decision
and host) and the systemd status line's count, against `RecordIndex.counts()` (kept per
change), at 5000 and 20,000 Nodes, in thread CPU time per single-node change.

    .venv/bin/python bench/core/publication_counts.py [--nodes 5000 20000] [--changes 200]

The "counts" column feeds the same gauges from `RecordIndex.counts()` (what
`Metrics.observe_publication` would do given the counts: an experiment, not the daemon's code).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodehosts.adapters.metrics import Metrics  # noqa: E402
from nodehosts.core.model import NodeInfo  # noqa: E402
from nodehosts.core.records import PublicationCounts, RecordIndex, RecordPolicy  # noqa: E402


def node(i: int, third: int = 0) -> NodeInfo:
    address = f"10.{64 + third}.{i >> 8}.{i & 255}"
    return NodeInfo(
        f"worker-{i}", (("InternalIP", address), ("Hostname", f"worker-{i}")), True, False
    )


def observe_counts(metrics: Metrics, counts: PublicationCounts) -> None:
    """The gauges `observe_publication` sets, from the counts."""
    metrics._nodes_seen.set(counts.nodes)
    metrics._nodes_published.set(counts.published)
    metrics._set_by_label(metrics._nodes_skipped, {str(k): v for k, v in counts.skipped.items()})
    metrics._hosts.set(counts.hosts)
    metrics._addresses.labels("ipv4").set(counts.ipv4)
    metrics._addresses.labels("ipv6").set(counts.ipv6)
    metrics._collisions.set(counts.collisions)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    policy = RecordPolicy()
    for count in args.nodes:
        nodes = {n.name: n for n in map(node, range(count))}
        index = RecordIndex(policy)
        index.update(nodes, [], policy)
        metrics = Metrics()
        walk = status = kept = 0.0
        for serial in range(args.changes):
            changed = node((serial * 97) % count, 1 + serial % 2)
            nodes[changed.name] = changed
            publication = index.update(nodes, [], policy, [changed.name])
            started = time.thread_time()
            metrics.observe_publication(publication)
            walk += time.thread_time() - started
            started = time.thread_time()
            published = sum(1 for d in publication.decisions if d.published)
            status += time.thread_time() - started
            started = time.thread_time()
            counts = index.counts()
            observe_counts(metrics, counts)
            kept += time.thread_time() - started
            assert counts.published == published
        per = 1000 / args.changes
        print(
            f"{count} Nodes: observe_publication {walk * per:.3f} ms, systemd status count"
            f" {status * per:.3f} ms, RecordIndex.counts() + gauges {kept * per:.3f} ms"
            " (thread CPU per change)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
