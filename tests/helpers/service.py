"""The service manager's side of a daemon under test: NOTIFY_SOCKET, HTTP probes, metrics.

Contract:
- `NotifySocket()` binds an AF_UNIX datagram socket at a short temporary path, like systemd's
  NOTIFY_SOCKET, and collects every datagram in a background thread as a `Notification`
  (its KEY=VALUE fields and the monotonic time it arrived). `on_ready` runs in that thread the
  moment a READY=1 arrives, so a test can look at the world exactly then. `env(watchdog_usec)`
  is what to put in the daemon's environment. Close it (or use `with`).
- `http_get(url)` returns (status, body) for any status, 2xx or not.
- `metric(text, name, labels)` reads one sample from a Prometheus text exposition.
- `short_directory()` is a temporary directory with a short path (AF_UNIX paths are limited to
  107 bytes; pytest's tmp_path can be longer).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.polling import wait_until

__all__ = ["Notification", "NotifySocket", "http_get", "metric", "short_directory"]


@contextlib.contextmanager
def short_directory() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="nh-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Notification:
    fields: Mapping[str, str]
    at: float  # time.monotonic() when it arrived

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


class NotifySocket:
    """Collects sd_notify datagrams sent to its address."""

    def __init__(self, *, on_ready: Callable[[], object] | None = None) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="nh-"))
        self.address = str(self._directory / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        self._sock.settimeout(0.1)
        self._on_ready = on_ready
        self.ready_result: object = None
        self._lock = threading.Lock()
        self._received: list[Notification] = []
        self._closed = False
        self._thread = threading.Thread(target=self._receive, name="notify-socket", daemon=True)
        self._thread.start()

    def env(self, *, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            if fields.get("READY") == "1" and self._on_ready is not None:
                self.ready_result = self._on_ready()
            with self._lock:
                self._received.append(Notification(fields, time.monotonic()))

    @property
    def received(self) -> list[Notification]:
        with self._lock:
            return list(self._received)

    def with_key(self, key: str, value: str | None = None) -> list[Notification]:
        return [
            n
            for n in self.received
            if key in n.fields and (value is None or n.fields[key] == value)
        ]

    def statuses(self) -> list[str]:
        return [n.fields["STATUS"] for n in self.received if "STATUS" in n.fields]

    def wait_for(
        self, key: str, value: str | None = None, *, timeout: float = 15.0
    ) -> Notification:
        found = wait_until(
            lambda: self.with_key(key, value),
            timeout=timeout,
            what=f"{key}={value or '*'} on NOTIFY_SOCKET (got {self.received[-5:]!r})",
        )
        return found[0]

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
        self._sock.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def http_get(url: str, *, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)")


def metric(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of sample `name` with exactly `labels` in a text exposition, or None."""
    want = dict(labels or {})
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if got == want:
            return float(match["value"])
    return None
