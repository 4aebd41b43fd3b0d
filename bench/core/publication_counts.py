"""What the per-publication counts cost: the walk of every decision and host they used to take
(`Metrics.observe_publication`, now `publication_counts` + `observe_counts`, for full builds;
the systemd status line's sum of published decisions) against what the daemon does since
issue 16 (`RecordIndex.counts()`, kept per change, into `Metrics.observe_counts`), at 5000 and
20,000 Nodes, in thread CPU time per single-node change.

    .venv/bin/python bench/core/publication_counts.py [--nodes 5000 20000] [--changes 200]
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
from nodehosts.core.records import RecordIndex, RecordPolicy  # noqa: E402


def node(i: int, third: int = 0) -> NodeInfo:
    address = f"10.{64 + third}.{i >> 8}.{i & 255}"
    return NodeInfo(
        f"worker-{i}", (("InternalIP", address), ("Hostname", f"worker-{i}")), True, False
    )


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
            metrics.observe_counts(counts)
            kept += time.thread_time() - started
            assert counts.published == published
        per = 1000 / args.changes
        print(
            f"{count} Nodes: walk (observe_publication) {walk * per:.3f} ms, systemd status"
            f" walk {status * per:.3f} ms, RecordIndex.counts() + observe_counts"
            f" {kept * per:.3f} ms"
            " (thread CPU per change)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
