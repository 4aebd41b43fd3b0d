"""Where the daemon's CPU goes: the LIST decode and the publish step, profiled in-process.

Usage (from the repository root; either interpreter):

    .venv/bin/python bench/core/profile_publish.py [--nodes 5000] [--changes 50] [--top 20]

Complements bench_sync.py (which times the real CLI from outside) with cProfile on the same
code the daemon runs, for the two costs that dominate it:

1. the LIST: `nodehosts.adapters.kube.nodes.list_nodes` (paged raw JSON -> NodeInfo) against
   the fake API server with realistic Nodes;
2. the publish step: the real `Daemon.publish()` (the record set: `RecordIndex.update`, the
   changed nodes' decision logs, the hosts body from the changed hosts, atomic write) for the
   first sync and then for single-node address changes (the per-change cost on the event loop
   thread that bench_sync.py sees as CPU per change; issue 16 compares it at --nodes 5000 and
   20000).

Logs go to /dev/null in the daemon's JSON format, so their formatting cost is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodehosts import logs  # noqa: E402
from nodehosts.adapters.kube.config import load_client_configuration  # noqa: E402
from nodehosts.adapters.kube.nodes import list_nodes  # noqa: E402
from nodehosts.app.daemon import Daemon  # noqa: E402
from nodehosts.config import build_settings  # noqa: E402
from nodehosts.core.model import NodeInfo  # noqa: E402
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node  # noqa: E402


def top(profile: cProfile.Profile, count: int, title: str, order: str = "tottime") -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats(order).print_stats(count)
    text = out.getvalue()
    body = text[text.find("   ncalls") :] if "   ncalls" in text else text
    print(f"\n--- {title}: top {count} by {'own' if order == 'tottime' else 'cumulative'} time")
    print(body.rstrip())


def readdressed(node: NodeInfo, address: str) -> NodeInfo:
    addresses = tuple(
        (kind, address if kind == "InternalIP" else value) for kind, value in node.addresses
    )
    return NodeInfo(
        name=node.name, addresses=addresses, ready=node.ready, unschedulable=node.unschedulable
    )


async def profile_publish(
    nodes: dict[str, NodeInfo], changes: int, count: int, workdir: Path
) -> None:
    settings = build_settings({}, {"hosts_file": str(workdir / "nodes.hosts")})
    daemon = Daemon(settings)
    daemon.nodes_synced(dict(nodes), "1")  # what the Node source calls after its LIST
    publisher = daemon.publisher
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    await publisher.publish()
    profile.disable()
    print(f"first publish ({len(nodes)} nodes): {time.perf_counter() - started:.3f} s")
    top(profile, count, "first publish")

    names = sorted(nodes)
    profile = cProfile.Profile()
    for profiled in (False, True):
        seconds: list[float] = []
        cpu: list[float] = []
        for serial in range(changes):
            name = names[(serial * 97 + profiled) % len(names)]
            current = dict(publisher.nodes)
            address = f"172.{30 + profiled}.{serial >> 8}.{serial & 255}"
            current[name] = readdressed(current[name], address)
            daemon.nodes_changed(current, str(serial + 2))
            started, started_cpu = time.perf_counter(), time.thread_time()
            if profiled:
                profile.enable()
            await publisher.publish()
            if profiled:
                profile.disable()
            seconds.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
        print(
            f"\npublish after one address change{' (profiled)' if profiled else ''}: "
            f"median {statistics.median(seconds) * 1000:.1f} ms wall, "
            f"{statistics.median(cpu) * 1000:.1f} ms CPU on the loop thread, "
            f"max {max(seconds) * 1000:.1f} ms wall over {changes} changes"
        )
    top(profile, count, f"{changes} single-change publishes", "cumulative")
    top(profile, count, f"{changes} single-change publishes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    with open("/dev/null", "w") as devnull:
        logs.configure("json", "info", stream=devnull)
        server = FakeApiServer()
        for index in range(args.nodes):
            address = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
            server.add_object(
                "nodes", make_node(f"node-{index:05d}", addresses=[address], realistic=True)
            )
        with server, tempfile.TemporaryDirectory(prefix="nodehosts-profile-") as temp:
            workdir = Path(temp)
            configuration = load_client_configuration(
                server.write_kubeconfig(workdir / "kubeconfig")
            )
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.enable()
            nodes, _ = list_nodes(configuration)
            profile.disable()
            print(f"LIST of {len(nodes)} nodes: {time.perf_counter() - started:.3f} s wall")
            top(profile, args.top, "list_nodes (server thread not profiled)")
            asyncio.run(profile_publish(nodes, args.changes, args.top, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
