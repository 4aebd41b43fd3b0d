"""`nodehosts run` as a real subprocess, the way systemd runs it.

Contract: `Daemon(args)` starts `python -m nodehosts.cli run ARGS` with JSON logs going to a
file; `.log_events()` parses them; `.stop(signal)` sends the signal and returns (exit code,
seconds it took to exit). The process is always killed at the end of a `with` block.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class Daemon:
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

    def __enter__(self) -> Daemon:
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
