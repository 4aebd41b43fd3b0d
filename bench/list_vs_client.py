"""Initial LIST of N realistic Nodes: nodehosts' list/watch code vs the official client.

Usage: python bench/list_vs_client.py [--nodes 5000] [--runs 3]

The fake API server runs in its own process (so its memory is not counted) and serves N
~10 KB kubelet-like Nodes. Each measurement runs in a fresh child process, which reports:
- seconds: wall time of the LIST alone (configuration already loaded, imports done);
- rss_before_mb: resident memory after imports and configuration, before the LIST;
- peak_rss_mb: the process's peak resident memory (ru_maxrss) after the LIST;
- rss_after_mb: resident memory after the LIST (result still held, gc run): the steady state.

Modes:
- node_source: NodeSource.run() until the first nodes_synced (paged limit=500, raw JSON,
  NodeInfo only), i.e. what the daemon does at start;
- list_nodes: the one-shot paged LIST of `nodehosts dump`;
- client_list_node: CoreV1Api().list_node(), the official client's plain call (one page,
  deserialized into model objects).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import structlog

MODES = ("node_source", "list_nodes", "client_list_node")
RESULT = "result: "


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, kubeconfig: Path) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    if mode == "client_list_node":
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        api = client.CoreV1Api(client.ApiClient(configuration))
        before = _rss_mb()
        started = time.perf_counter()
        count = len(api.list_node().items)
    elif mode == "list_nodes":
        from nodehosts.adapters.kube.config import load_client_configuration
        from nodehosts.adapters.kube.nodes import list_nodes

        configuration = load_client_configuration(kubeconfig)
        before = _rss_mb()
        started = time.perf_counter()
        nodes, _ = list_nodes(configuration)
        count = len(nodes)
    else:
        import asyncio

        from nodehosts.adapters.kube.config import load_client_configuration
        from nodehosts.adapters.kube.nodes import NodeSource

        configuration = load_client_configuration(kubeconfig)

        class FirstSync:
            def __init__(self) -> None:
                self.done = asyncio.Event()
                self.count = 0

            def nodes_synced(self, nodes: Mapping[str, object], resource_version: str) -> None:
                self.count = len(nodes)
                self.done.set()

            def nodes_changed(self, nodes: Mapping[str, object], resource_version: str) -> None:
                pass

            def source_error(self, reason: str, message: str) -> None:
                print(f"error: {reason}: {message}", file=sys.stderr)

        async def first_sync() -> int:
            listener = FirstSync()
            task = asyncio.create_task(NodeSource(lambda: configuration, listener).run())
            await listener.done.wait()
            task.cancel()
            return listener.count

        before = _rss_mb()
        started = time.perf_counter()
        count = asyncio.run(first_sync())
    seconds = time.perf_counter() - started
    gc.collect()
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
        "rss_after_mb": _rss_mb(),
        "nodes": count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # Logs go to stderr; the result is the one stdout line with the marker.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        print(RESULT + json.dumps(child(args.child, args.kubeconfig)), flush=True)
        return 0

    import kubernetes

    with tempfile.TemporaryDirectory(prefix="nodehosts-bench-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodehosts.testing.fake_apiserver",
                "--nodes",
                str(args.nodes),
                "--realistic",
                "--token",
                "bench",
                "--kubeconfig",
                str(kubeconfig),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            print(server.stdout.readline().strip(), flush=True)
            results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
            for _ in range(args.runs):
                for mode in MODES:  # interleaved, so drift hits every mode alike
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            mode,
                            "--kubeconfig",
                            str(kubeconfig),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    [line] = [x for x in out.splitlines() if x.startswith(RESULT)]
                    results[mode].append(json.loads(line[len(RESULT) :]))
        finally:
            server.terminate()
            server.wait()

    print(
        f"python {sys.version.split()[0]}, kubernetes {kubernetes.__version__}, "
        f"{args.nodes} realistic nodes, median of {args.runs} runs"
    )
    print(
        f"{'mode':<18} {'seconds':>8} {'RSS before MB':>14} {'peak RSS MB':>12} "
        f"{'RSS after MB':>13} {'nodes':>6}"
    )
    medians = {}
    for mode, runs in results.items():
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        medians[mode] = median
        print(
            f"{mode:<18} {median['seconds']:>8.2f} {median['rss_before_mb']:>14.1f} "
            f"{median['peak_rss_mb']:>12.1f} {median['rss_after_mb']:>13.1f} "
            f"{int(median['nodes']):>6}"
        )
    ratio = medians["node_source"]["seconds"] / medians["client_list_node"]["seconds"]
    print(f"node_source / client_list_node time: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
