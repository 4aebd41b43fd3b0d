"""dnsperf against nodehosts (uvloop and plain asyncio), dnsmasq and CoreDNS serving the same
1000 names.

Usage (from the repository root):

    .venv-debian/bin/python bench/dns/run.py [--names 1000] [--duration 10] [--servers ...]

CoreDNS is the binary scripts/upstream-bin builds at the pinned version (`--coredns`, default
$NODEHOSTS_UPSTREAM_BIN/coredns, else .upstream/bin/coredns), reading the names from a hosts
file with the hosts block the project recommends (`ttl 30`, `reload 2s`, `fallthrough`; zone
`.`) and nothing else in front of it: no cache, no log, no forward (dnsmasq has no upstream
either). Go sets GOMAXPROCS from the CPU affinity, so it runs on its one pinned CPU like the rest.

Each server runs alone in its own process on 127.0.0.1, pinned to one CPU while dnsperf runs on
the other (when there are two), and answers A queries for every name (FQDN and bare, shuffled,
1 in 4 in mixed case; `--edns` adds an OPT record to every query). dnsperf keeps 100 queries
outstanding for `--duration` seconds. The servers take turns for `--rounds` rounds, so that
noise from other work on the machine hits all of them alike; we print every run, then the best
and the median QPS per server, lost queries (summed over the rounds) and the ratio of the best
QPS to dnsmasq's best, and the median of the per-round ratios (the least noisy figure); a
Markdown table with --markdown. nodehosts runs with the interpreter running this script
(`--python` to pick another).
"""

from __future__ import annotations

import argparse
import dataclasses
import operator
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.dns.names import bench_hosts, hosts_file

HERE = Path(__file__).resolve().parent
SERVERS = ("nodehosts-uvloop", "nodehosts-asyncio", "dnsmasq", "coredns")
REPO = HERE.parents[1]
DEFAULT_COREDNS = Path(os.environ.get("NODEHOSTS_UPSTREAM_BIN", REPO / ".upstream/bin")) / "coredns"


@dataclass(frozen=True)
class Result:
    server: str
    qps: float
    sent: int
    completed: int
    lost: int
    latency_ms: float
    # Server CPU time (user + system) per completed query, in microseconds: unlike QPS this
    # hardly moves when other work shares the machine, so it compares implementations.
    cpu_us: float = 0.0
    # The kernel's share of it (system time): the loopback UDP path, recvmmsg/sendto, wakeups.
    sys_us: float = 0.0
    # dnsperf's "Response codes" line, e.g. "NOERROR 179626 (100.00%)": a fast SERVFAIL is no
    # answer, so every run shows what it was answered with.
    rcodes: str = ""

    @property
    def capacity(self) -> float:
        """Queries per second one full core would answer at this CPU cost."""
        return 1e6 / self.cpu_us if self.cpu_us else 0.0


def write_queries(path: Path, names: int, *, seed: int = 1) -> None:
    """dnsperf's input: `<name> A` for every FQDN and bare name, shuffled, 1 in 4 in 0x20 case."""
    rng = random.Random(seed)
    lines = []
    for host in bench_hosts(names).hosts:
        for name in host.names:
            mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
            lines.append(f"{mixed if rng.random() < 0.25 else name} A\n")
    rng.shuffle(lines)
    path.write_text("".join(lines))


# Set from --nice: a negative value lets the benchmark's processes win over other work on a
# shared machine (all servers and dnsperf alike, so the comparison stays fair).
NICE = 0


def _pin(cpu: int | None) -> list[str]:
    prefix = ["nice", "-n", str(NICE)] if NICE else []
    if cpu is None or shutil.which("taskset") is None:
        return prefix
    return [*prefix, "taskset", "-c", str(cpu)]


def start_nodehosts(
    python: str, names: int, loop: str, cpu: int | None
) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [*_pin(cpu), python, str(HERE / "serve.py"), "--names", str(names), "--loop", loop],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.match(r"ready (\d+) (\w+)", line)
    if match is None:
        process.kill()
        raise SystemExit(f"nodehosts benchmark server did not start: {line!r}")
    if match[2] != loop:
        process.kill()
        raise SystemExit(f"asked for {loop}, server runs on {match[2]}")
    return process, int(match[1])


def start_dnsmasq(hosts: Path, cpu: int | None) -> tuple[subprocess.Popen[str], int]:
    for _ in range(5):
        port = _free_port()
        process = subprocess.Popen(
            [
                *_pin(cpu),
                shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                f"--addn-hosts={hosts}",
                "--local=/node.internal/",
                "--local-ttl=30",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                f"--user={_user()}",
                "--log-facility=-",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if _wait_answers(port, process):
            return process, port
        process.kill()
        process.wait()
    raise SystemExit("dnsmasq did not start")


def start_coredns(
    binary: Path, hosts: Path, directory: Path, cpu: int | None
) -> tuple[subprocess.Popen[str], int]:
    corefile = directory / "Corefile"
    for _ in range(5):
        port = _free_port()
        corefile.write_text(
            f".:{port} {{\n"
            "    bind 127.0.0.1\n"
            f"    hosts {hosts} . {{\n"
            "        ttl 30\n"
            "        reload 2s\n"
            "        fallthrough\n"
            "    }\n"
            "}\n"
        )
        process = subprocess.Popen(
            [*_pin(cpu), str(binary), "-conf", str(corefile), "-quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if _wait_answers(port, process):
            return process, port
        process.kill()
        process.wait()
    raise SystemExit(f"{binary} did not start")


def _coredns_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "-version"], capture_output=True, text=True, check=False)
    return done.stdout.split()[0] if done.stdout.split() else "CoreDNS ?"


def _dnsmasq_version() -> str:
    done = subprocess.run(
        [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    return " ".join(done.stdout.split()[:3]) or "dnsmasq ?"


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_answers(port: int, process: subprocess.Popen[str]) -> bool:
    import socket

    probe = (
        bytes.fromhex("4e4801000001000000000000")
        + b"\x08worker-0\x04node\x08internal\x00\x00\x01\x00\x01"
    )
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        while time.monotonic() < deadline and process.poll() is None:
            try:
                sock.sendto(probe, ("127.0.0.1", port))
                sock.recv(512)
            except OSError:
                continue
            return True
    return False


def dnsperf(
    port: int, queries: Path, duration: float, cpu: int | None, server: str, *, edns: bool
) -> Result:
    done = subprocess.run(
        [
            *_pin(cpu),
            "dnsperf",
            *(["-e"] if edns else []),
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(queries),
            "-l",
            str(duration),
            "-q",
            "100",
            "-t",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    )
    out = done.stdout

    def number(label: str) -> float:
        match = re.search(rf"{label}:\s+([\d.]+)", out)
        if match is None:
            raise SystemExit(f"dnsperf output without {label!r}:\n{out}")
        return float(match[1])

    return Result(
        server=server,
        qps=number("Queries per second"),
        sent=int(number("Queries sent")),
        completed=int(number("Queries completed")),
        lost=int(number("Queries lost")),
        latency_ms=number("Average Latency \\(s\\)") * 1000,
        rcodes=rcodes[1].strip() if (rcodes := re.search(r"Response codes:\s+(.*)", out)) else "?",
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--edns", action="store_true", help="send every query with EDNS0")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--coredns", type=Path, default=DEFAULT_COREDNS, help="coredns binary")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--nice", type=int, default=0, help="niceness of servers and dnsperf")
    args = parser.parse_args()
    global NICE  # noqa: PLW0603 - a command-line setting for the whole run
    NICE = args.nice
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is not installed (apt-get install dnsperf)")
    if "coredns" in args.servers and not os.access(args.coredns, os.X_OK):
        raise SystemExit(
            f"{args.coredns} is missing: make upstream (or --coredns PATH, or leave it out"
            " with --servers)"
        )
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)

    results: dict[str, list[Result]] = {server: [] for server in args.servers}
    with tempfile.TemporaryDirectory(prefix="nodehosts-bench-") as tmp:
        directory = Path(tmp)
        queries = directory / "queries"
        write_queries(queries, args.names)
        hosts = directory / "hosts"
        hosts.write_text(hosts_file(bench_hosts(args.names)))
        for round_number in range(1, args.rounds + 1):
            for server in args.servers:
                if server == "dnsmasq":
                    process, port = start_dnsmasq(hosts, server_cpu)
                elif server == "coredns":
                    process, port = start_coredns(args.coredns, hosts, directory, server_cpu)
                else:
                    loop = server.split("-", 1)[1]
                    process, port = start_nodehosts(args.python, args.names, loop, server_cpu)
                try:
                    cpu_before = _cpu_seconds(process.pid)
                    result = dnsperf(
                        port, queries, args.duration, client_cpu, server, edns=args.edns
                    )
                    user, system = map(operator.sub, _cpu_seconds(process.pid), cpu_before)
                    per_query = 1e6 / max(1, result.completed)
                    result = dataclasses.replace(
                        result, cpu_us=(user + system) * per_query, sys_us=system * per_query
                    )
                finally:
                    tail = stop(process)
                results[server].append(result)
                print(
                    f"round {round_number} {server:18} {result.qps:9.0f} qps"
                    f"  lost {result.lost}/{result.sent}  avg latency {result.latency_ms:.3f} ms"
                    f"  server cpu {result.cpu_us:.2f} us/query (kernel {result.sys_us:.2f})"
                    f"  rcodes {result.rcodes}" + (f"  [{tail.strip()}]" if tail.strip() else ""),
                    flush=True,
                )

    best = {server: max(r.qps for r in runs) for server, runs in results.items()}
    reference = best.get("dnsmasq")
    python = [
        *subprocess.run(
            [
                args.python,
                "-c",
                "import sys, uvloop, dnslib; print(sys.version.split()[0], uvloop.__version__,"
                " dnslib.version)",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split(),
        "?",
        "?",
        "?",
    ]
    print(
        f"\n{args.names} names, {'EDNS' if args.edns else 'no EDNS'}, {args.rounds} rounds of"
        f" {args.duration:.0f} s; python {python[0]}, uvloop {python[1]}, dnslib {python[2]},"
        f" {_dnsmasq_version()}"
        + (f", {_coredns_version(args.coredns)}" if "coredns" in args.servers else "")
        + "\n"
    )
    if args.markdown:
        print(
            "| server | best QPS | median QPS | lost | best vs dnsmasq"
            " | per-round ratio (median) | server CPU per query (median) | of it kernel"
            " | QPS per core |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for server, runs in results.items():
        median = statistics.median(r.qps for r in runs)
        lost = sum(r.lost for r in runs)
        ratio = round_ratio = "-"
        if reference:
            ratio = f"{best[server] / reference:.2f}x"
            # The same round ran both servers back to back: their ratio is the least noisy.
            round_ratio = "{:.2f}x".format(
                statistics.median(
                    r.qps / d.qps for r, d in zip(runs, results["dnsmasq"], strict=True)
                )
            )
        cpu_us = statistics.median(r.cpu_us for r in runs)
        sys_us = statistics.median(r.sys_us for r in runs)
        if args.markdown:
            print(
                f"| {server} | {best[server]:.0f} | {median:.0f} | {lost} | {ratio} |"
                f" {round_ratio} | {cpu_us:.2f} us | {sys_us:.2f} us | {1e6 / cpu_us:.0f} |"
            )
        else:
            print(
                f"{server:18} best {best[server]:9.0f}  median {median:9.0f}  lost {lost}"
                f"  best {ratio} dnsmasq, per round {round_ratio};"
                f" cpu {cpu_us:.2f} us/query (kernel {sys_us:.2f})"
                f" = {1e6 / cpu_us:.0f} qps per core"
            )


if __name__ == "__main__":
    main()
