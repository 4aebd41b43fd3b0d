"""`nodehosts demo`: the real daemon against an embedded, simulated lab cluster.

Contract: `run_demo()` starts the fake API server (the one the tests use) with the lab's
nodes, runs the real `Daemon` against it through the official client, and keeps changing
the cluster the way DHCP workers do: workers join, change address and leave every few
seconds, while every kubelet heartbeats (which must never rewrite the file). It prints what
is published first, then one line per change of the hosts file (joined / moved from A to B /
left; green, yellow, red on a terminal), and at start the `dig` and `nodehosts dump` command
lines that work against it (a control socket in its temporary directory). `LabCluster` and
`describe_changes` are the pure parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Mapping
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


def _say(text: str) -> None:
    """Print for whoever watches. A reader that went away (BrokenPipeError) ends the demo
    quietly, like any writer into a closed pipe (see run_demo); a closed stdout is ignored."""
    with contextlib.suppress(ValueError):
        print(text, flush=True)


Published = Mapping[str, tuple[str, ...]]


def published_names(text: str) -> dict[str, tuple[str, ...]]:
    """Short name (the last on its lines: `worker-0`) -> its addresses, from hosts text."""
    from nodehosts.core.hosts import parse_hosts

    hosts, _warnings = parse_hosts(text)
    return {host.names[-1]: tuple(str(a) for a in host.addresses) for host in hosts}


def describe_changes(before: Published, after: Published) -> list[tuple[str, str]]:
    """(kind, sentence) for every name that joined, moved or left, in name order."""
    out = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            out.append(("joined", f"{name} joined: {', '.join(new or ())}"))
        elif new is None:
            out.append(("left", f"{name} left (was {', '.join(old)})"))
        else:
            out.append(("moved", f"{name} moved from {', '.join(old)} to {', '.join(new)}"))
    return out


async def _print_changes(path: Path, *, colour: bool) -> None:
    """What is published, then a line per change each time the hosts file changes."""
    from nodehosts.dumpview import GREEN, RED, YELLOW, paint

    colours = {"joined": GREEN, "moved": YELLOW, "left": RED}
    last: Published | None = None
    while True:
        with contextlib.suppress(FileNotFoundError):
            current = published_names(path.read_text())
            if last is None:
                _say("published:")
                for name, addresses in sorted(current.items()):
                    _say(f"  {name:<14} {', '.join(addresses)}")
            elif current != last:
                stamp = time.strftime("%H:%M:%S")
                for kind, sentence in describe_changes(last, current):
                    _say(f"{stamp} {paint(sentence, colours[kind], enabled=colour)}")
            last = current
        await asyncio.sleep(0.2)


def nodehosts_command() -> list[str]:
    """How to run this nodehosts from a shell: the venv's script by full path, else -m."""
    script = Path(sys.executable).parent / "nodehosts"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "nodehosts.cli"]


def run_demo(*, duration: float | None, dns_listen: str, seed: int | None) -> int:
    from nodehosts.app.daemon import Daemon, StartupError, run_daemon
    from nodehosts.config import build_settings
    from nodehosts.runtime import run as run_loop

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
        control = directory / "control.sock"
        settings = build_settings(
            {},
            {
                "kubeconfig": str(kubeconfig),
                "hosts_file": str(hosts),
                "static_hosts": str(static),
                "dns_listen": [dns_listen] if dns_listen else [],
                "control_socket": str(control),
                "state_dir": "",
            },
        )
        from nodehosts.dumpview import use_colour

        dump = shlex.join([*nodehosts_command(), "dump", "--config", "", "--control-socket",
                           str(control)])  # fmt: skip
        _say("nodehosts demo: the real daemon against a simulated cluster (Ctrl-C stops)")
        _say(f"  hosts file: {hosts}")
        _say("  try, in another terminal:")
        if dns_listen:
            host, _, port = dns_listen.rpartition(":")
            _say(f"    dig @{host} -p {port} worker-0 +short")
        _say(f"    {dump}")
        _say(f"    {dump} --watch")

        async def main() -> int:
            daemon = Daemon(settings)
            printer = asyncio.create_task(_print_changes(hosts, colour=use_colour(sys.stdout)))

            def printer_done(task: asyncio.Task[None]) -> None:
                # The printer ends only by failing (its reader went away: `demo | head`): stop.
                if not task.cancelled():
                    daemon.stop()

            printer.add_done_callback(printer_done)
            tasks = [asyncio.create_task(_simulate(server, cluster, interval=3.0)), printer]
            if duration is not None:
                asyncio.get_running_loop().call_later(duration, daemon.stop)
            try:
                code = await run_daemon(daemon)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if not printer.cancelled() and isinstance(printer.exception(), BrokenPipeError):
                raise BrokenPipeError  # the CLI ends quietly (exit 141)
            return code

        try:
            return run_loop(main())
        except StartupError as error:  # logged by the daemon: one line, no traceback
            return error.exit_code
        except KeyboardInterrupt:
            return 0
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
