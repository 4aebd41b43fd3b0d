"""`nodehosts run` as a real subprocess, the way systemd runs it, and the other commands as an
operator runs them.

Contract:
- `DaemonProcess(args)` starts `python -m nodehosts.cli run ARGS` with JSON logs going to a file;
  `.log_events()` parses them; `.stop(signal)` sends the signal and returns (exit code, seconds
  it took to exit). The process is always killed at the end of a `with` block.
- `start_daemon(api, workdir, *extra, token=...)` writes `workdir/kubeconfig` for `api` with
  `token` (or takes an existing `kubeconfig=`) and starts a `DaemonProcess` that uses it, with no
  config file, no control socket and no state directory: only what `extra` turns on (a flag in
  `extra` overrides those defaults: the last one given wins).
- `start_listening_daemon(api, workdir, *extra, dns=ADDRESS, metrics=ADDRESS, ...)` is
  `start_daemon` with `--dns-listen` and/or `--metrics-listen` on free ports of those loopback
  addresses, returned with its `Ports` once the daemon has bound them; a port another process
  took meanwhile (`dns_listen_failed`: the daemon exits 2; `metrics_listen_failed`: it runs
  on without metrics) is retried with new ones. `start_dns_daemon(...)` is the DNS-only case,
  returning (the daemon, the port). `bound(daemon, dns=, metrics=)` is that wait, for daemons
  started otherwise: False when a port was taken.
- `nodehosts(*args)` runs the real entry point to completion and returns the CompletedProcess
  (text, captured; the exit code is the caller's to check); `nodehosts_dump(*args)` is
  `nodehosts dump --config '' ARGS`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.helpers.net import free_port
from tests.helpers.polling import wait_until

if TYPE_CHECKING:
    from nodehosts.testing.fake_apiserver import FakeApiServer

# The source backs off up to 30 s between attempts while the API is down.
RECOVERY_TIMEOUT = 40.0
# Starting the interpreter and binding, on a loaded 2-core machine.
START_TIMEOUT = 30.0
PORT_ATTEMPTS = 5


class DaemonProcess:
    """A running `nodehosts run` process."""

    def __init__(self, args: list[str], *, workdir: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log_path = workdir / "nodehosts.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nodehosts.cli", "run", "--log-format", "json", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line as a dict (non-JSON lines are kept as {'raw': line})."""
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"raw": line})
        return events

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.log_events() if event.get("event") == name]

    def stop(self, signum: int = signal.SIGTERM, *, timeout: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started


def start_daemon(
    api: FakeApiServer,
    workdir: Path,
    *extra: str,
    token: str | None = None,
    kubeconfig: Path | None = None,
    env: dict[str, str] | None = None,
) -> DaemonProcess:
    """`nodehosts run` with only what `extra` turns on (no control socket, no state dir).

    Give either `token` (the kubeconfig `workdir/kubeconfig` is written for `api` with it) or
    an existing `kubeconfig` to use as it is.
    """
    if (token is None) == (kubeconfig is None):
        raise TypeError("start_daemon takes exactly one of token= and kubeconfig=")
    workdir.mkdir(parents=True, exist_ok=True)
    if token is not None:
        kubeconfig = api.write_kubeconfig(workdir / "kubeconfig", token=token)
    return DaemonProcess(
        [
            "--config",
            "",
            "--kubeconfig",
            str(kubeconfig),
            "--control-socket",
            "",
            "--state-dir",
            "",
            *extra,
        ],
        workdir=workdir,
        env=env,
    )


@dataclass(frozen=True)
class Ports:
    """Where a daemon started by `start_listening_daemon` listens (None: not asked for)."""

    dns: int | None = None
    metrics: int | None = None


def start_listening_daemon(
    api: FakeApiServer,
    workdir: Path,
    *extra: str,
    dns: str | None = None,
    metrics: str | None = None,
    token: str | None = None,
    kubeconfig: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[DaemonProcess, Ports]:
    """`start_daemon` serving DNS on a free port of the address `dns` and/or metrics on one of
    `metrics`, returned once it has bound them (or exited): (the daemon, its ports).

    A port another process took meanwhile is retried with new ones: the daemon exits 2 with
    `dns_listen_failed`, or logs `metrics_listen_failed` and runs on (it is stopped here).
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        ports = Ports(
            dns=free_port(dns) if dns is not None else None,
            metrics=free_port(metrics) if metrics is not None else None,
        )
        flags: list[str] = []
        if dns is not None:
            flags += ["--dns-listen", _listen(dns, ports.dns)]
        if metrics is not None:
            flags += ["--metrics-listen", _listen(metrics, ports.metrics)]
        daemon = start_daemon(
            api, workdir, *flags, *extra, token=token, kubeconfig=kubeconfig, env=env
        )
        listening = bound(daemon, dns=dns is not None, metrics=metrics is not None)
        if listening or attempt == PORT_ATTEMPTS:
            return daemon, ports
        daemon.__exit__(None, None, None)
    raise AssertionError("unreachable")


def bound(daemon: DaemonProcess, *, dns: bool, metrics: bool) -> bool:
    """Wait until `daemon` listens for DNS and/or metrics (as asked) or exits: False when a
    port was taken (`dns_listen_failed`: it exits 2; `metrics_listen_failed`: it runs on)."""

    def settled() -> bool:
        if daemon.process.poll() is not None or daemon.events_named("metrics_listen_failed"):
            return True
        return (not dns or bool(daemon.events_named("dns_listening"))) and (
            not metrics or bool(daemon.events_named("metrics_listening"))
        )

    wait_until(settled, timeout=START_TIMEOUT, what=f"the daemon to bind (log: {daemon.log_path})")
    return not (
        daemon.events_named("dns_listen_failed") or daemon.events_named("metrics_listen_failed")
    )


def start_dns_daemon(
    api: FakeApiServer,
    workdir: Path,
    *extra: str,
    address: str = "127.0.0.1",
    token: str | None = None,
    kubeconfig: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[DaemonProcess, int]:
    """`start_daemon` serving DNS on a free port of `address`: (the daemon, the port)."""
    daemon, ports = start_listening_daemon(
        api, workdir, *extra, dns=address, token=token, kubeconfig=kubeconfig, env=env
    )
    assert ports.dns is not None
    return daemon, ports.dns


def _listen(address: str, port: int | None) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def nodehosts(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real entry point in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nodehosts.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def nodehosts_dump(*args: str) -> subprocess.CompletedProcess[str]:
    """`nodehosts dump` with no config file."""
    return nodehosts("dump", "--config", "", *args)
