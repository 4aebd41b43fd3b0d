"""`python -m nodehosts.testing.fake_apiserver --nodes N`: serve a fake cluster until interrupted
(for benchmarks and manual tests)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

from nodehosts.testing.fake_apiserver.server import FakeApiServer
from nodehosts.testing.objects import make_node


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake cluster of N nodes until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m nodehosts.testing.fake_apiserver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--realistic", action="store_true", help="~10 KB kubelet-like Nodes")
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig here")
    args = parser.parse_args(argv)
    server = FakeApiServer(
        host=args.host,
        port=args.port,
        tokens=[args.token] if args.token else None,
        tls=args.tls,
        history_limit=10_000,
    )
    for i in range(args.nodes):
        address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        server.add_object(
            "nodes", make_node(f"node-{i:05d}", addresses=[address], realistic=args.realistic)
        )
    with server:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig, token=args.token)
        print(f"serving {args.nodes} nodes at {server.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
