"""How fast `nodehosts run` stops on SIGTERM and SIGINT (README: "exits 0 within a second or
two"; target: every stop < 2 s, the functional tests only assert the exit code).

Usage (from the repository root; either interpreter):

    .venv/bin/python bench/stop.py [--runs 10] [--nodes 100] [--target 2.0]

Each run starts the in-process fake API server with `--nodes` Nodes and the real daemon as a
subprocess (hosts file, DNS on a free loopback port, control socket, state directory: every
sink that has to be closed), waits until the hosts file has every Node, sends SIGTERM (odd runs:
SIGINT) and times until the process has exited. Prints min/p50/max and PASS/FAIL; exit 0 when
every stop exited 0 within the target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.net import free_port

TOKEN = "bench-token"


def one_stop(api: FakeApiServer, workdir: Path, nodes: int, signum: int) -> tuple[int, float]:
    kubeconfig = api.write_kubeconfig(workdir / "kubeconfig", token=TOKEN)
    hosts = workdir / "nodes.hosts"
    log = (workdir / "nodehosts.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "nodehosts.cli", "run", "--config", "", "--log-format", "json",
            "--kubeconfig", str(kubeconfig), "--hosts-file", str(hosts),
            "--dns-listen", f"127.0.0.1:{free_port()}", "--control-socket",
            str(workdir / "control.sock"), "--state-dir", str(workdir / "state"),
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NOTIFY_SOCKET": ""},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (hosts.exists() and hosts.read_text().count(" worker-") >= nodes):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the daemon did not publish: see {workdir}/nodehosts.log")
            time.sleep(0.05)
        started = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=60)
        return code, time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--target", type=float, default=2.0, help="seconds, every stop")
    args = parser.parse_args()
    seconds: list[float] = []
    codes: list[int] = []
    with FakeApiServer(tokens=[TOKEN]) as api:
        for i in range(args.nodes):
            api.add_object("nodes", make_node(f"worker-{i}", addresses=[f"10.240.1.{i % 250}"]))
        for run in range(args.runs):
            signum = signal.SIGTERM if run % 2 == 0 else signal.SIGINT
            with tempfile.TemporaryDirectory(prefix="nh-stop-") as directory:
                code, took = one_stop(api, Path(directory), args.nodes, signum)
            codes.append(code)
            seconds.append(took)
            print(f"run {run + 1}: {signal.Signals(signum).name} exit {code} in {took:.3f} s")
    ok = all(code == 0 for code in codes) and max(seconds) < args.target
    print(
        f"stop: min {min(seconds):.3f} s, p50 {statistics.median(seconds):.3f} s, "
        f"max {max(seconds):.3f} s; target every stop < {args.target} s with exit 0: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
