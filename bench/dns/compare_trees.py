"""dnsperf against nodehosts' DNS server from two source trees, taking turns: does a change
to the answer path cost QPS or CPU?

Usage (from the repository root):

    git archive HEAD~1 | tar -x -C /tmp/before     # the tree to compare against
    .venv-debian/bin/python bench/dns/compare_trees.py --before /tmp/before \
        [--after .] [--rounds 5] [--duration 5] [--nice -10] [--loop uvloop]

Each tree's own bench/dns/serve.py runs (so it imports that tree's nodehosts) with the same
interpreter, names and queries as run.py (1000 names, A for every FQDN and bare name, 100
outstanding), server and dnsperf pinned to different CPUs. In every round both trees run back
to back, before first in odd rounds and after first in even ones, so drift in the machine's
load hits both alike. Per run it prints QPS and the server's CPU time per answered query;
then, per tree, the best and median QPS and median CPU per query, and the medians of the
per-round after/before ratios: the figures to judge a change by on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.dns import run
from bench.dns.run import Result, dnsperf, stop, write_queries


def start_tree(
    tree: Path, python: str, names: int, loop: str, cpu: int | None
) -> tuple[subprocess.Popen[str], int]:
    """`tree`'s bench/dns/serve.py; its port once it answers."""
    serve = tree / "bench" / "dns" / "serve.py"
    process = subprocess.Popen(
        [*run._pin(cpu), python, str(serve), "--names", str(names), "--loop", loop],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.match(r"ready (\d+) (\w+)", line)
    if match is None or match[2] != loop:
        process.kill()
        raise SystemExit(f"{serve} did not start on {loop}: {line!r}")
    return process, int(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="tree to compare against")
    parser.add_argument("--after", type=Path, default=run.REPO, help="tree with the change")
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--nice", type=int, default=0, help="niceness of servers and dnsperf")
    args = parser.parse_args()
    run.NICE = args.nice
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    results: dict[str, list[Result]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory(prefix="nodehosts-compare-") as tmp:
        queries = Path(tmp) / "queries"
        write_queries(queries, args.names)
        for round_number in range(1, args.rounds + 1):
            order = list(trees) if round_number % 2 else list(reversed(trees))
            for label in order:
                process, port = start_tree(
                    trees[label], args.python, args.names, args.loop, server_cpu
                )
                try:
                    before_cpu = sum(run._cpu_seconds(process.pid))
                    result = dnsperf(port, queries, args.duration, client_cpu, label, edns=False)
                    cpu = sum(run._cpu_seconds(process.pid)) - before_cpu
                    result = dataclasses.replace(result, cpu_us=cpu / result.completed * 1e6)
                finally:
                    stop(process)
                results[label].append(result)
                print(
                    f"round {round_number} {label:6} {result.qps:9.0f} qps  lost {result.lost}"
                    f"  server cpu {result.cpu_us:.2f} us/query  rcodes {result.rcodes}",
                    flush=True,
                )
    print(f"\n{args.names} names, {args.loop}, {args.rounds} rounds of {args.duration:.0f} s")
    for label, runs in results.items():
        print(
            f"{label:6} best {max(r.qps for r in runs):9.0f}"
            f"  median {statistics.median(r.qps for r in runs):9.0f}"
            f"  lost {sum(r.lost for r in runs)}"
            f"  cpu {statistics.median(r.cpu_us for r in runs):.2f} us/query (median)"
        )
    pairs = list(zip(results["after"], results["before"], strict=True))
    qps = statistics.median(a.qps / b.qps for a, b in pairs)
    cpu = statistics.median(a.cpu_us / b.cpu_us for a, b in pairs)
    print(
        f"after/before, median of the rounds: QPS {qps:.3f}x ({(qps - 1) * 100:+.1f}%),"
        f" CPU per query {cpu:.3f}x ({(cpu - 1) * 100:+.1f}%)"
    )


if __name__ == "__main__":
    main()
