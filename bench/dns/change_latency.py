"""How fast a Node change is answered over DNS (issue 3: within 100 ms, p99).

Usage (from the repository root; either interpreter):

    .venv/bin/python bench/dns/change_latency.py
    .venv-debian/bin/python bench/dns/change_latency.py [--changes 200] [--heartbeat-period 1]

One run starts the in-process fake API server (nodehosts.testing.fake_apiserver) with `--nodes`
realistic Nodes (~10 KB each), and the real daemon as a subprocess with the interpreter running
this script:

    python -m nodehosts.cli run --config '' --kubeconfig K --dns-listen 127.0.0.1:PORT
        --control-socket '' --state-dir '' --log-format json

(DNS only, no hosts file; kubeconfig with a bearer token, in a directory of its own). The fake
server's connections get TCP_NODELAY, as kube-apiserver's (Go) do; `--nagle` leaves Python's
http.server default (Nagle on), under which an event that follows a heartbeat by less than the
client's delayed-ACK time (~40 ms) waits for that ACK. Once the daemon answers, a background
thread heartbeats `--heartbeat-nodes` Nodes, each once every `--heartbeat-period` seconds, evenly
spread (FakeApiServer.heartbeat: what a kubelet's status update does; the daemon must parse each
one and find nothing to publish). Then `--changes` Node changes, one at a time with a random
pause of 0.5x to 1.5x `--gap` between them, alternate between
- DHCP: an existing Node's InternalIP moves to a fresh address (edit_object), and
- a new realistic Node with a fresh address is added (add_object),
and each is timed from just before the API write to the first DNS reply that carries the new
address: dnspython queries `<node>.node.internal A` over UDP on loopback every `--interval`
(2 ms) from the main thread, each query waiting at most 0.2 s (a timeout counts as lost). The
clock stops when that reply is received, so a latency overstates the true one by at most one
poll interval plus one round trip (~0.2 ms).

Printed: p50/p90/p99/max (nearest rank) overall and per kind, lost queries, missed changes (no
answer within `--change-timeout`, counted at that value), and a breakdown of where the time goes
from the daemon's own JSON log: the write -> its `node_published` line (watch delivery, the
daemon's coalescing delay while busy, updating the record set), -> its `dns_zone_updated` line
(rebuilding the answer cache), -> the bench seeing the answer (next poll). `--trace` starts the
daemon through a wrapper (TRACER below) that also times the watch delivery, the hand-over to the
event loop, the coalescing, RecordIndex.update, _log_decisions, DnsService.update and every cyclic
gc run inside the daemon, and prints the slowest changes stage by stage. Exit status: 0 when
p99 <= `--target-ms` (100) and no change was missed, 1 otherwise, 2 when the setup failed.

Everything is on loopback and bounded (each wait has a timeout); a default run takes about
40 s. The bench process lowers its GIL switch interval to 0.5 ms so that its heartbeat and
API-server threads delay the polling thread by less than a poll interval.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import dns.version  # noqa: E402

from nodehosts.testing import fake_apiserver  # noqa: E402
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node  # noqa: E402

TOKEN = "bench-dns-change-token"
LOCAL = "127.0.0.1"
DOMAIN = "node.internal"  # the daemon's default --domain
QUERY_TIMEOUT = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- helpers


def node_name(index: int) -> str:
    return f"node-{index:05d}"


def node_address(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


class FreshAddresses:
    """Addresses no Node ever had in this run: 172.16.0.1, 172.16.0.2, ..."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        serial = self._next
        return f"172.{16 + (serial >> 16)}.{(serial >> 8) & 255}.{serial & 255}"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the daemon binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOCAL, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOCAL, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port for UDP and TCP on 127.0.0.1")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of them at or below it."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def process_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (NaN once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return math.nan
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "?"


def readdress(address: str) -> Callable[[dict[str, Any]], None]:
    def edit(node: dict[str, Any]) -> None:
        for entry in node["status"]["addresses"]:
            if entry["type"] == "InternalIP":
                entry["address"] = address

    return edit


def parse_time(stamp: object) -> float | None:
    """The epoch seconds of a structlog ISO timestamp ("2026-11-26T10:00:00.123456Z")."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


# --------------------------------------------------------------------------- load and probes


class Heartbeats(threading.Thread):
    """`names` heartbeat round-robin, each once per `period` s, evenly spread over it."""

    def __init__(self, server: FakeApiServer, names: Sequence[str], period: float) -> None:
        super().__init__(name="bench-heartbeats", daemon=True)
        self._server, self._names = server, list(names)
        self._step = period / len(self._names) if self._names else math.inf
        self.stop = threading.Event()
        self.sent = 0
        self.elapsed = 0.0
        self.max_behind = 0.0  # how far the thread fell behind its schedule, at worst

    def run(self) -> None:
        if not self._names:
            return
        started = time.monotonic()
        while not self.stop.is_set():
            self._server.heartbeat(self._names[self.sent % len(self._names)])
            self.sent += 1
            delay = started + self.sent * self._step - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                self.max_behind = max(self.max_behind, -delay)
        self.elapsed = time.monotonic() - started

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0


class Resolver:
    """A/`name` over UDP on loopback with dnspython, from one socket."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCAL, 0))
        self.sock.setblocking(False)  # dnspython needs that to honour its timeout
        self.lost = 0
        self.queries = 0

    def close(self) -> None:
        self.sock.close()

    def lookup(self, name: str) -> tuple[str, frozenset[str]] | None:
        """(rcode, addresses), or None when no reply came within QUERY_TIMEOUT."""
        self.queries += 1
        query = dns.message.make_query(name, "A")
        try:
            reply = dns.query.udp(
                query,
                LOCAL,
                port=self.port,
                timeout=QUERY_TIMEOUT,
                sock=self.sock,
                ignore_unexpected=True,
            )
        except dns.exception.Timeout:
            self.lost += 1
            return None
        except dns.query.BadResponse:
            # A late reply to an earlier, timed-out query (a busy daemon starting): drop every
            # queued reply, or each later query would read its predecessor's and fail too.
            self.lost += 1
            with contextlib.suppress(BlockingIOError):
                while True:
                    self.sock.recv(65535)
            return None
        addresses = frozenset(rd.to_text() for rrset in reply.answer for rd in rrset)
        return dns.rcode.to_text(reply.rcode()), addresses


# --------------------------------------------------------------------------- the daemon


def daemon_command(python: str, kubeconfig: Path, port: int, *, trace: bool) -> list[str]:
    return [
        python,
        *(["-c", TRACER] if trace else ["-m", "nodehosts.cli"]),
        "run",
        "--config",
        "",
        "--kubeconfig",
        str(kubeconfig),
        "--dns-listen",
        f"{LOCAL}:{port}",
        "--control-socket",
        "",
        "--state-dir",
        "",
        "--log-format",
        "json",
    ]


# --trace: the same daemon, started through this wrapper, which records (time.time()) when the
# watch thread read and posted each change, when the loop got it, each publish, the time spent in
# RecordIndex.update / _log_decisions / DnsService.update, and every cyclic gc run (generation,
# duration), and writes them as JSON lines to $NODEHOSTS_BENCH_TRACE when the daemon exits.
TRACER = r"""
import atexit, gc, json, os, runpy, sys, threading, time

events = []
local = threading.local()

def record(name, **fields):
    events.append(dict(fields, event=name, t=time.time(), thread=threading.current_thread().name))

gc_started = {}

def on_gc(phase, info):
    if phase == "start":
        gc_started[threading.get_ident()] = time.perf_counter()
    else:
        began = gc_started.pop(threading.get_ident(), None)
        if began is not None:
            record("gc", generation=info["generation"], collected=info["collected"],
                   seconds=time.perf_counter() - began)

gc.callbacks.append(on_gc)

import nodehosts.app as app
import nodehosts.adapters.kube.reflector as reflector
from nodehosts.adapters.dns_server import DnsService

def timed(owner, name, label):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            record(label, seconds=time.perf_counter() - began)
    setattr(owner, name, wrapper)

import nodehosts.core.records as records
timed(records.RecordIndex, "update", "build_publication")
timed(app.Daemon, "_log_decisions", "log_decisions")
timed(DnsService, "update", "dns_update")

original_apply = reflector.CollectionSource._apply
def apply(self, line, loop):
    local.read = time.time()
    return original_apply(self, line, loop)
reflector.CollectionSource._apply = apply

original_post = reflector.CollectionSource._post
def post(self, item, loop):
    if isinstance(item, reflector.StateChanged) and not item.synced:
        record("posted", read=getattr(local, "read", None))
    return original_post(self, item, loop)
reflector.CollectionSource._post = post

original_changed = app.Daemon.nodes_changed
def nodes_changed(self, nodes, version):
    record("loop_got")
    return original_changed(self, nodes, version)
app.Daemon.nodes_changed = nodes_changed

original_publish = app.Daemon.publish
async def publish(self):
    record("publish_start")
    try:
        return await original_publish(self)
    finally:
        record("publish_end")
app.Daemon.publish = publish

def dump():
    with open(os.environ["NODEHOSTS_BENCH_TRACE"], "w") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")

atexit.register(dump)
sys.argv = ["nodehosts", *sys.argv[1:]]
runpy.run_module("nodehosts.cli", run_name="__main__", alter_sys=True)
"""


def daemon_env(pycache: Path) -> dict[str, str]:
    """Ours, with this checkout first on sys.path and bytecode cached outside the tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONTRACEMALLOC", "PYTHONDEVMODE"):
        env.pop(name, None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def read_log(path: Path) -> list[dict[str, Any]]:
    events = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
    return events


def log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --------------------------------------------------------------------------- measuring


@dataclass
class Change:
    kind: str  # "dhcp" or "add"
    node: str
    address: str
    wall_start: float  # time.time() just before the API write
    write_s: float  # how long the write call took
    latency_s: float | None = None  # write -> first reply with the new address
    polls: int = 0
    # From the daemon's log, seconds after the write (None when not found):
    published_s: float | None = None  # its node_published line
    zone_s: float | None = None  # the dns_zone_updated line after it
    zone_build_s: float | None = None  # that line's build_seconds


@dataclass
class Result:
    python: str
    python_version: str
    dnspython: str
    loop: str | None = None
    nodes: int = 0
    node_bytes: int = 0
    nagle: bool = False  # the fake API server's connections without TCP_NODELAY
    heartbeat_nodes: int = 0
    heartbeat_period_s: float = 0.0
    heartbeat_rate: float = 0.0
    heartbeat_max_behind_s: float = 0.0
    startup_s: float = 0.0
    changes: list[Change] = field(default_factory=list)
    queries: int = 0
    lost: int = 0
    missed: int = 0
    daemon_cpu_idle_per_s: float = math.nan  # heartbeats only
    daemon_cpu_per_change_s: float = math.nan  # over the change phase, heartbeats subtracted
    exit_code: int | None = None  # after SIGTERM (None: killed after 10 s)
    stop_s: float | None = None
    trace: dict[str, Any] = field(default_factory=dict)  # --trace: see analyse_trace
    load_before: str = ""
    load_after: str = ""
    elapsed_s: float = 0.0


def time_change(
    resolver: Resolver, fqdn: str, address: str, *, interval: float, limit: float, started: float
) -> tuple[float | None, int]:
    """Poll every `interval` s until `fqdn` answers exactly `address`: (seconds, polls)."""
    expected = ("NOERROR", frozenset([address]))
    polls = 0
    next_poll = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - started > limit:
            return None, polls
        got = resolver.lookup(fqdn)
        polls += 1
        if got == expected:
            return time.perf_counter() - started, polls
        next_poll = max(next_poll + interval, now)
        delay = next_poll - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def wait_answering(resolver: Resolver, fqdn: str, address: str, process: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    expected = ("NOERROR", frozenset([address]))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if resolver.lookup(fqdn) == expected:
            return True
        time.sleep(0.05)
    return False


def attribute(changes: Sequence[Change], events: Sequence[dict[str, Any]]) -> None:
    """Fill in when the daemon logged publishing each change and the zone update after it."""
    published: dict[tuple[str, str], float] = {}
    zones: list[tuple[float, float | None]] = []
    for event in events:
        stamp = parse_time(event.get("timestamp"))
        if stamp is None:
            continue
        name = event.get("event")
        if name in ("node_published", "node_published_with_note"):
            node = event.get("node")
            for address in event.get("addresses") or []:
                published.setdefault((str(node), str(address)), stamp)
        elif name == "dns_zone_updated":
            build = event.get("build_seconds")
            zones.append((stamp, float(build) if isinstance(build, int | float) else None))
    for change in changes:
        stamp = published.get((change.node, change.address))
        if stamp is None:
            continue
        change.published_s = stamp - change.wall_start
        for zone_stamp, build in zones:
            if zone_stamp >= stamp:
                change.zone_s, change.zone_build_s = zone_stamp - change.wall_start, build
                break


TRACE_STAGES = (
    ("write -> watch thread reads the event (API server, HTTP)", "delivered"),
    ("watch thread: parse + inventory update", "parsed"),
    ("posted -> loop runs nodes_changed", "handed_over"),
    ("nodes_changed -> publish starts (coalescing; none when idle)", "coalesced"),
    ("publish starts -> DNS zone swapped", "published"),
    ("  RecordIndex.update (the record set)", "build"),
    ("  _log_decisions", "decisions"),
    ("  DnsService.update", "dns_update"),
    ("zone swapped -> answer seen (poll, round trip)", "answered"),
    ("cyclic gc pauses inside the window (sum)", "gc"),
)


def analyse_trace(changes: Sequence[Change], events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per change, seconds spent in each of TRACE_STAGES (from the --trace wrapper's events)."""

    def after(name: str, moment: float) -> dict[str, Any] | None:
        for event in events:
            if event.get("event") == name and event["t"] >= moment:
                return event
        return None

    gcs = [e for e in events if e.get("event") == "gc"]
    per_change: list[dict[str, float]] = []
    for change in changes:
        if change.latency_s is None:
            continue
        start, end = change.wall_start, change.wall_start + change.latency_s
        posted = after("posted", start)
        if posted is None or posted["t"] > end or posted.get("read") is None:
            continue
        got, began = after("loop_got", posted["t"]), after("publish_start", posted["t"])
        swapped = after("dns_update", posted["t"])
        if got is None or began is None or swapped is None or swapped["t"] > end:
            continue
        build = after("build_publication", began["t"])
        decisions = after("log_decisions", began["t"])
        in_window = [g["seconds"] for g in gcs if start <= g["t"] <= end]
        per_change.append(
            {
                "delivered": posted["read"] - start,
                "parsed": posted["t"] - posted["read"],
                "handed_over": got["t"] - posted["t"],
                "coalesced": began["t"] - got["t"],
                "published": swapped["t"] - began["t"],
                "build": build["seconds"] if build else math.nan,
                "decisions": decisions["seconds"] if decisions else math.nan,
                "dns_update": swapped["seconds"],
                "answered": end - swapped["t"],
                "gc": sum(in_window),
                "gc_max": max(in_window, default=0.0),
                "latency": change.latency_s,
            }
        )
    window = [e for e in gcs if changes and e["t"] >= changes[0].wall_start]
    by_generation: dict[str, dict[str, float]] = {}
    for generation in (0, 1, 2):
        pauses = [g["seconds"] for g in window if g["generation"] == generation]
        by_generation[str(generation)] = {
            "count": len(pauses),
            "median_s": percentile(pauses, 0.5),
            "max_s": max(pauses, default=math.nan),
        }
    return {"per_change": per_change, "gc": by_generation}


def run(args: argparse.Namespace, workdir: Path) -> Result:
    result = Result(
        python=args.python,
        python_version="?",
        dnspython=dns.version.version,
        heartbeat_nodes=min(args.heartbeat_nodes, args.nodes),
        heartbeat_period_s=args.heartbeat_period,
        nagle=args.nagle,
        load_before=load_average(),
    )
    began = time.monotonic()
    rng = random.Random(args.seed)
    # Like kube-apiserver (Go sets TCP_NODELAY on every connection): without it, a watch event
    # written while the previous one (a heartbeat) waits for the client's delayed ACK sits in
    # Nagle's buffer for up to 40 ms. http.server leaves Nagle on; --nagle keeps it that way.
    fake_apiserver._Handler.disable_nagle_algorithm = not args.nagle
    server = FakeApiServer(tokens=[TOKEN], history_limit=5000)
    for index in range(args.nodes):
        node = make_node(node_name(index), addresses=[node_address(index)], realistic=True)
        if index == 0:
            result.node_bytes = len(json.dumps(node, separators=(",", ":")))
        server.add_object("nodes", node)
    result.nodes = args.nodes
    server.start()
    port = free_port()
    log_path = workdir / "nodehosts.log"
    trace_path = workdir / "trace.jsonl"
    resolver = Resolver(port)
    beats: Heartbeats | None = None
    try:
        # A directory of its own: the daemon watches the kubeconfig's directory for rotated
        # credentials, and its own log lines (or bytecode) next to it would wake that watcher.
        (workdir / "kube").mkdir()
        kubeconfig = server.write_kubeconfig(workdir / "kube" / "kubeconfig", token=TOKEN)
        with log_path.open("wb") as log:
            started = time.monotonic()
            process = subprocess.Popen(
                daemon_command(args.python, kubeconfig, port, trace=args.trace),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**daemon_env(workdir / "pycache"), "NODEHOSTS_BENCH_TRACE": str(trace_path)},
            )
        try:
            first = f"{node_name(0)}.{DOMAIN}"
            if not wait_answering(resolver, first, node_address(0), process, args.start_timeout):
                raise SetupError(
                    f"the daemon did not answer {first} within {args.start_timeout:.0f} s "
                    f"(exit status {process.poll()})\n--- daemon log ---\n{log_tail(log_path)}"
                )
            result.startup_s = time.monotonic() - started
            resolver.queries = resolver.lost = 0  # count from here: before it bound, all are lost
            listening = [e for e in read_log(log_path) if e.get("event") == "dns_listening"]
            result.loop = listening[0].get("loop") if listening else None
            result.python_version = subprocess.run(
                [args.python, "-c", "import sys; print(sys.version.split()[0])"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()

            heartbeat_names = [
                node_name(i) for i in rng.sample(range(args.nodes), result.heartbeat_nodes)
            ]
            beats = Heartbeats(server, heartbeat_names, args.heartbeat_period)
            beats.start()
            # Heartbeats only, for a while: the daemon's CPU for them alone.
            time.sleep(0.5)
            cpu0, t0 = process_cpu(process.pid), time.monotonic()
            time.sleep(args.warmup)
            cpu1, t1 = process_cpu(process.pid), time.monotonic()
            result.daemon_cpu_idle_per_s = (cpu1 - cpu0) / (t1 - t0)

            fresh = FreshAddresses()
            movable = rng.sample(range(args.nodes), min(args.nodes, (args.changes + 1) // 2))
            added = 0
            for number in range(args.changes):
                address = fresh()
                if number % 2 == 0 and movable:
                    kind, name = "dhcp", node_name(movable.pop())
                    write_start = time.perf_counter()
                    wall = time.time()
                    server.edit_object("nodes", name, readdress(address))
                else:
                    kind, name = "add", f"new-{added:05d}"
                    added += 1
                    node = make_node(name, addresses=[address], realistic=True)
                    write_start = time.perf_counter()
                    wall = time.time()
                    server.add_object("nodes", node)
                change = Change(kind, name, address, wall, time.perf_counter() - write_start)
                change.latency_s, change.polls = time_change(
                    resolver,
                    f"{name}.{DOMAIN}",
                    address,
                    interval=args.interval,
                    limit=args.change_timeout,
                    started=write_start,
                )
                if change.latency_s is None:
                    result.missed += 1
                result.changes.append(change)
                if process.poll() is not None:
                    raise SetupError(
                        f"the daemon exited ({process.returncode}) during the changes\n"
                        f"--- daemon log ---\n{log_tail(log_path)}"
                    )
                time.sleep(args.gap * (0.5 + rng.random()))
            cpu2, t2 = process_cpu(process.pid), time.monotonic()
            result.daemon_cpu_per_change_s = (
                (cpu2 - cpu1) - result.daemon_cpu_idle_per_s * (t2 - t1)
            ) / max(1, len(result.changes))
        finally:
            if beats is not None:
                beats.stop.set()
                beats.join(timeout=5)
                result.heartbeat_rate = beats.rate
                result.heartbeat_max_behind_s = beats.max_behind
            stopping = time.monotonic()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                result.exit_code = process.wait(timeout=10)
                result.stop_s = time.monotonic() - stopping
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        resolver.close()
        server.stop()
        if args.keep_log is not None and log_path.exists():
            shutil.copyfile(log_path, args.keep_log)
    attribute(result.changes, read_log(log_path))
    if args.trace:
        result.trace = analyse_trace(result.changes, read_log(trace_path))
    result.queries, result.lost = resolver.queries, resolver.lost
    result.load_after = load_average()
    result.elapsed_s = time.monotonic() - began
    return result


class SetupError(Exception):
    pass


# --------------------------------------------------------------------------- report


def ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 1000:.1f}"


def summary_row(label: str, values: Sequence[float]) -> str:
    cells = [percentile(values, f) for f in (0.5, 0.9, 0.99)] + [max(values, default=math.nan)]
    return f"| {label} | {len(values)} | " + " | ".join(ms(v) for v in cells) + " |"


def report_trace(trace: dict[str, Any]) -> None:
    rows = trace["per_change"]
    print(f"--trace: inside the daemon ({len(rows)} changes matched; ms):")
    print()
    print("| stage | p50 | p90 | p99 | max |")
    print("|---|---:|---:|---:|---:|")
    for label, key in TRACE_STAGES:
        values = [row[key] for row in rows if not math.isnan(row[key])]
        cells = [percentile(values, f) for f in (0.5, 0.9, 0.99)]
        cells.append(max(values, default=math.nan))
        print(f"| {label} | " + " | ".join(ms(v) for v in cells) + " |")
    print()
    print("cyclic gc in the daemon during the changes:")
    for generation, stats in trace["gc"].items():
        print(
            f"  generation {generation}: {stats['count']} runs, median "
            f"{ms(stats['median_s'])} ms, max {ms(stats['max_s'])} ms"
        )
    slowest = sorted(rows, key=lambda row: -row["latency"])[:8]
    print()
    print("slowest changes (ms): " + ", ".join(key for _, key in TRACE_STAGES) + ", gc max")
    for row in slowest:
        cells = [ms(row[key]) for _, key in TRACE_STAGES] + [ms(row["gc_max"])]
        print(f"  {ms(row['latency'])}: " + " / ".join(cells))
    print()


def report(result: Result, args: argparse.Namespace) -> bool:
    changes = result.changes
    timeout = args.change_timeout
    latencies = [c.latency_s if c.latency_s is not None else timeout for c in changes]
    p99 = percentile(latencies, 0.99)
    target = args.target_ms / 1000
    passed = bool(changes) and p99 <= target and result.missed == 0
    print(
        f"{result.nodes} realistic Nodes (~{result.node_bytes / 1000:.1f} KB each); daemon on "
        f"python {result.python_version} ({result.python}), event loop {result.loop}; "
        f"dnspython {result.dnspython}; started answering after {result.startup_s:.1f} s; "
        f"fake API server {'with Nagle (--nagle)' if result.nagle else 'with TCP_NODELAY'}"
    )
    print(
        f"heartbeats: {result.heartbeat_nodes} Nodes every {result.heartbeat_period_s:g} s, "
        f"{result.heartbeat_rate:.1f}/s achieved (at worst {ms(result.heartbeat_max_behind_s)} "
        f"ms behind schedule); daemon CPU {result.daemon_cpu_idle_per_s * 100:.1f}% of a core "
        f"for them alone, {ms(result.daemon_cpu_per_change_s)} ms more per change"
    )
    print(
        f"polling every {args.interval * 1000:g} ms: {result.queries} queries, {result.lost} lost; "
        f"{result.missed} of {len(changes)} changes not answered within {timeout:g} s; "
        f"load average {result.load_before} before, {result.load_after} after; "
        f"{result.elapsed_s:.0f} s in all"
    )
    stop = "did not exit within 10 s of SIGTERM (killed)"
    if result.stop_s is not None:
        stop = f"exited {result.exit_code} {result.stop_s:.2f} s after SIGTERM"
    print(f"daemon {stop}")
    print()
    print("| change -> DNS answer (ms) | n | p50 | p90 | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    print(summary_row("all", latencies))
    for kind, label in (("dhcp", "address changed (DHCP)"), ("add", "node added")):
        print(
            summary_row(
                label, [v for c, v in zip(changes, latencies, strict=True) if c.kind == kind]
            )
        )
    print()
    attributed = [c for c in changes if None not in (c.latency_s, c.published_s, c.zone_s)]
    if attributed:
        print(f"where the time goes (from the daemon's log, {len(attributed)} changes; ms):")
        print()
        print("| stage | p50 | p90 | p99 | max |")
        print("|---|---:|---:|---:|---:|")
        stages: list[tuple[str, list[float]]] = [
            ("API write call", [c.write_s for c in attributed]),
            (
                "write -> node_published logged (watch, coalescing when busy, record set)",
                [c.published_s for c in attributed],  # type: ignore[misc]
            ),
            (
                "node_published -> dns_zone_updated logged",
                [c.zone_s - c.published_s for c in attributed],  # type: ignore[operator]
            ),
            (
                "  of which the answer cache build (build_seconds)",
                [c.zone_build_s for c in attributed if c.zone_build_s is not None],
            ),
            (
                "dns_zone_updated -> answer seen (poll, round trip)",
                [c.latency_s - c.zone_s for c in attributed],  # type: ignore[operator]
            ),
        ]
        for label, values in stages:
            cells = [percentile(values, f) for f in (0.5, 0.9, 0.99)]
            cells.append(max(values, default=math.nan))
            print(f"| {label} | " + " | ".join(ms(v) for v in cells) + " |")
        print()
    if result.trace:
        report_trace(result.trace)
    verdict = "PASS" if passed else "FAIL"
    print(
        f"p99 change -> DNS answer: {ms(p99)} ms (n={len(changes)}), target <= "
        f"{args.target_ms:g} ms, {result.missed} missed: {verdict}"
    )
    return passed


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="Nodes in the cluster (1000)")
    parser.add_argument("--changes", type=int, default=200, help="changes to time (200)")
    parser.add_argument(
        "--interval", type=float, default=0.002, help="DNS poll interval in s (0.002)"
    )
    parser.add_argument(
        "--gap", type=float, default=0.1, help="mean pause between changes in s (0.1)"
    )
    parser.add_argument(
        "--heartbeat-nodes", type=int, default=300, help="Nodes that heartbeat (300)"
    )
    parser.add_argument(
        "--heartbeat-period",
        type=float,
        default=10.0,
        help="seconds between two heartbeats of one Node (10, kubelet's status update)",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="heartbeats alone before the changes (2 s)"
    )
    parser.add_argument("--change-timeout", type=float, default=2.0, help="per change (2 s)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="daemon start (60 s)")
    parser.add_argument("--target-ms", type=float, default=100.0, help="p99 target (100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the daemon (this one)"
    )
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="leave Nagle's algorithm on in the fake API server (Python's http.server default)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run the daemon through a wrapper that times its stages and gc pauses (profiling)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-log", type=Path, help="copy the daemon's JSON log here")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.changes < 1 or args.interval <= 0 or args.heartbeat_period <= 0:
        parser.error("--nodes and --changes must be >= 1, --interval and periods > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The polling thread must not wait 5 ms (the default) for the GIL behind the heartbeat
    # and API-server threads of this process.
    sys.setswitchinterval(0.0005)
    print(
        f"nodehosts DNS change latency (issue 3): {platform.platform()}, "
        f"{os.cpu_count()} CPUs ({cpu_model()})"
    )
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="nodehosts-bench-dns-change-") as temp:
        try:
            result = run(args, Path(temp))
        except SetupError as error:
            print(f"setup failed: {error}", file=sys.stderr)
            return 2
    passed = report(result, args)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
