"""Run a DnsService with N benchmark hosts on 127.0.0.1 until stdin closes or SIGTERM.

Usage: python bench/dns/serve.py --names 1000 --port 0 --loop uvloop|asyncio
Prints `ready <port>` on stdout once it answers, and the service's counters on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.dns.names import bench_hosts
from nodehosts import logs
from nodehosts.adapters.dns_server import DnsService
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.runtime import loop_name, run


async def serve(names: int, port: int, address: str) -> None:
    service = DnsService(listen=[(address, port)], zone=ZoneConfig())
    service.update(bench_hosts(names))
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {service.addresses[0][1]} {loop_name()}", flush=True)
    await stop.wait()
    await service.stop()
    answers = service.stats.answers
    print(
        f"stats udp={service.stats.udp_queries} slow_path={answers.slow} "
        f"rcodes={answers.by_rcode()} errors={answers.errors}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    logs.configure("console", "warning", stream=sys.stderr)
    run(serve(args.names, args.port, args.address), use_uvloop=args.loop == "uvloop")


if __name__ == "__main__":
    main()
