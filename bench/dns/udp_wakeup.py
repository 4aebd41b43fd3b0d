"""Time the DNS server's UDP read loop itself, in process: what one wakeup costs per query.

Usage (from the repository root):

    .venv-debian/bin/python bench/dns/udp_wakeup.py [--batch 64] [--repeat 30]
    .venv-debian/bin/python bench/dns/udp_wakeup.py --compare /tmp/before [--repeat 60]

A `DnsService` with 1000 names is started on 127.0.0.1 on an event loop that is never run: a
client socket sends `--batch` A queries (the same names as run.py), then the listener's reader
callback (`_UdpListener._readable`, what the loop calls when the socket is readable) is called
directly, and the replies are read back. Only the callback is timed, in the thread's CPU time
(time preempted by other processes is not counted), so the figure is the server's own cost
per query: recvfrom, `Answerer.handle`, sendto and the bookkeeping around them, without
dnsperf, the loop's polling or other processes. `--batch 64` is a saturated server (64
datagrams per wakeup, the most one wakeup reads), `--batch 1` an idle one. One repeat is
20,000 queries; it prints the median and the best repeat in microseconds per query.

`--compare DIR` loads DIR's `nodehosts/adapters/dns_server.py` (before) beside this tree's
(after) in the same process, each with its own service and sockets, and alternates their
repeats (before, after, after, before, ...), at batch 64 and 1: drift in the machine's load
and the interpreter's warm-up hit both alike. It prints both medians and the median of the
per-pair after/before ratios. Everything else (the answer cache, the forwarder) is this tree's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import socket
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import dnslib

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.dns.names import bench_hosts
from nodehosts import logs
from nodehosts.adapters import dns_server
from nodehosts.core.dns.zone import ZoneConfig

QUERIES_PER_REPEAT = 20_000


class Wakeups:
    """One started service of `module` and a client; `repeat(batch)` times its callback."""

    def __init__(self, module: ModuleType, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.service: Any = module.DnsService(listen=[("127.0.0.1", 0)], zone=ZoneConfig())
        self.service.update(bench_hosts(1000))
        loop.run_until_complete(self.service.start())
        self.readable = self.service._udp[0]._readable
        names = [name for host in bench_hosts(1000).hosts for name in host.names]
        self.packets = [dnslib.DNSRecord.question(name, "A").pack() for name in names]
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.client.connect(("127.0.0.1", self.service.addresses[0][1]))
        self.client.settimeout(5)
        self.sent = 0
        # The thread's CPU time, not the wall clock: time the process spends preempted by
        # other work on the machine is not the callback's cost. Its own cost is taken off.
        self.clock = time.thread_time
        self.overhead = min(-self.clock() + self.clock() for _ in range(10_000))

    def repeat(self, batch: int) -> float:
        """Microseconds per query over QUERIES_PER_REPEAT queries, `batch` per wakeup."""
        clock, readable, send, recv = self.clock, self.readable, self.client.send, self.client.recv
        spent = 0.0
        rounds = QUERIES_PER_REPEAT // batch
        for _ in range(rounds):
            for _ in range(batch):
                send(self.packets[self.sent % len(self.packets)])
                self.sent += 1
            started = clock()
            readable()
            spent += clock() - started - self.overhead
            for _ in range(batch):
                recv(4096)
        return spent / (rounds * batch) * 1e6

    def close(self) -> None:
        self.client.close()
        self.loop.run_until_complete(self.service.stop())


def load_dns_server(tree: Path) -> ModuleType:
    """`tree`'s dns_server.py as a module of its own (its imports resolve to this tree)."""
    path = tree / "nodehosts" / "adapters" / "dns_server.py"
    spec = importlib.util.spec_from_file_location("before_dns_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="datagrams per wakeup (<= 64)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--compare", type=Path, help="tree whose dns_server.py is 'before'")
    args = parser.parse_args()
    logs.configure("console", "warning", stream=sys.stderr)
    loop = asyncio.new_event_loop()
    if args.compare is None:
        wakeups = Wakeups(dns_server, loop)
        wakeups.repeat(args.batch)  # warm-up
        results = [wakeups.repeat(args.batch) for _ in range(args.repeat)]
        wakeups.close()
        print(
            f"batch {args.batch}: median {statistics.median(results):.3f} us/query,"
            f" best {min(results):.3f}"
        )
        return
    services = {
        "before": Wakeups(load_dns_server(args.compare.resolve()), loop),
        "after": Wakeups(dns_server, loop),
    }
    for batch in (64, 1):
        for wakeups in services.values():
            wakeups.repeat(batch)  # warm-up
        times: dict[str, list[float]] = {label: [] for label in services}
        for number in range(args.repeat):
            order = ("before", "after") if number % 2 == 0 else ("after", "before")
            for label in order:
                times[label].append(services[label].repeat(batch))
        ratios = [a / b for a, b in zip(times["after"], times["before"], strict=True)]
        ratio = statistics.median(ratios)
        print(
            f"batch {batch:2}: before {statistics.median(times['before']):.3f},"
            f" after {statistics.median(times['after']):.3f} us/query (medians of {args.repeat});"
            f" after/before per pair, median {ratio:.3f}x ({(ratio - 1) * 100:+.1f}%),"
            f" quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}-"
            f"{statistics.quantiles(ratios, n=4)[2]:.3f}",
            flush=True,
        )
    for wakeups in services.values():
        wakeups.close()
    loop.close()


if __name__ == "__main__":
    main()
