"""`nodehosts demo`: the real daemon against an embedded, simulated lab cluster.

Contract: `run_demo()` starts the fake API server (the one the tests use) with the lab's
nodes, runs the real `Daemon` against it through the official client, and keeps changing
the cluster the way DHCP workers do: workers join, change address and leave every few
seconds, while every kubelet heartbeats (which must never rewrite the file). Each new
version of the hosts file is printed to stdout. `LabCluster` is the pure part: it only
decides what happens next.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node

DHCP_POOL = [f"10.240.0.{host}" for host in range(101, 201)]
STATIC_NODES = {
    "controller-0": "10.240.0.10",
    "controller-1": "10.240.0.11",
    "controller-2": "10.240.0.12",
    "worker-0": "10.240.0.101",
}
STATIC_HOSTS = "10.240.0.40 lb-0\n"


@dataclass(frozen=True, slots=True)
class Change:
    """One thing the simulated cluster did."""

    kind: str  # "join" | "readdress" | "leave"
    node: str
    address: str | None = None

    def describe(self) -> str:
        if self.kind == "join":
            return f"{self.node} joined with DHCP address {self.address}"
        if self.kind == "readdress":
            return f"{self.node} got a new DHCP lease: {self.address}"
        return f"{self.node} left the cluster"


@dataclass
class LabCluster:
    """The lab's nodes: fixed controllers and worker-0, plus DHCP workers that come and go."""

    rng: random.Random
    max_workers: int = 6
    workers: dict[str, str] = field(default_factory=dict)
    _next_worker: int = 1

    def initial(self) -> dict[str, str]:
        return dict(STATIC_NODES)

    def _free_address(self) -> str:
        used = set(self.workers.values()) | set(STATIC_NODES.values())
        return self.rng.choice([a for a in DHCP_POOL if a not in used])

    def step(self) -> Change:
        """Pick the next change: join while small, leave while large, else anything."""
        choices = []
        if len(self.workers) < self.max_workers:
            choices += ["join"] * 2
        if self.workers:
            choices += ["readdress"] * 2 + ["leave"]
        kind = self.rng.choice(choices)
        if kind == "join":
            name = f"worker-{self._next_worker}"
            self._next_worker += 1
            self.workers[name] = self._free_address()
            return Change("join", name, self.workers[name])
        name = self.rng.choice(sorted(self.workers))
        if kind == "readdress":
            self.workers[name] = self._free_address()
            return Change("readdress", name, self.workers[name])
        del self.workers[name]
        return Change("leave", name)


def _node(name: str, address: str) -> dict[str, object]:
    return make_node(name, addresses=[("InternalIP", address), ("Hostname", name)], realistic=True)


async def _simulate(server: FakeApiServer, cluster: LabCluster, *, interval: float) -> None:
    names = list(STATIC_NODES)
    while True:
        await asyncio.sleep(interval)
        change = cluster.step()
        _say(f"\n### cluster: {change.describe()}")
        if change.kind == "join":
            assert change.address is not None
            server.add_object("nodes", _node(change.node, change.address))
            names.append(change.node)
        elif change.kind == "readdress":
            assert change.address is not None
            server.modify_object("nodes", _node(change.node, change.address))
        else:
            server.delete_object("nodes", change.node)
            names.remove(change.node)
        for name in names:  # every kubelet heartbeats; nodehosts must not rewrite for that
            server.heartbeat(name)


def _say(text: str, end: str = "\n") -> None:
    """Print for whoever watches; a closed stdout (the reader went away) is not our failure."""
    with contextlib.suppress(OSError, ValueError):
        print(text, end=end, flush=True)


async def _print_changes(path: Path) -> None:
    """Print the hosts file whenever its content changes."""
    last = None
    while True:
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text()
            if text != last:
                _say(f"\n--- {path}\n{text}", end="")
                last = text
        await asyncio.sleep(0.2)


def run_demo(*, duration: float | None, dns_listen: str, seed: int | None) -> int:
    from nodehosts.adapters.eventloop import run as run_loop
    from nodehosts.app import Daemon, run_daemon
    from nodehosts.config import build_settings

    rng = random.Random(seed)
    cluster = LabCluster(rng)
    with tempfile.TemporaryDirectory(prefix="nodehosts-demo-") as tmp, FakeApiServer() as server:
        directory = Path(tmp)
        for name, address in cluster.initial().items():
            server.add_object("nodes", _node(name, address))
        kubeconfig = directory / "kubeconfig"
        server.write_kubeconfig(kubeconfig, token="demo-token")
        static = directory / "static-hosts"
        static.write_text(STATIC_HOSTS)
        hosts = directory / "hosts" / "nodes.hosts"
        hosts.parent.mkdir()
        settings = build_settings(
            {},
            {
                "kubeconfig": str(kubeconfig),
                "hosts_file": str(hosts),
                "static_hosts": str(static),
                "dns_listen": [dns_listen] if dns_listen else [],
                "control_socket": "",
                "state_dir": "",
            },
        )
        _say(f"fake API server at {server.url}; hosts file {hosts}")
        if dns_listen:
            host, _, port = dns_listen.rpartition(":")
            _say(f"try: dig @{host} -p {port} worker-0 +short")

        async def main() -> int:
            daemon = Daemon(settings)
            tasks = [
                asyncio.create_task(_simulate(server, cluster, interval=3.0)),
                asyncio.create_task(_print_changes(hosts)),
            ]
            if duration is not None:
                asyncio.get_running_loop().call_later(duration, daemon.stop)
            try:
                return await run_daemon(daemon)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        try:
            return run_loop(main())
        except KeyboardInterrupt:
            return 0
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
