"""systemd's notify protocol (sd_notify) and watchdog, spoken by hand.

Contract:

- `Notifier.from_environ()` reads NOTIFY_SOCKET once. Without it every `notify` is a no-op that
  returns False, so the daemon calls it unconditionally (under `nodehosts run` in a terminal,
  in tests, in containers without systemd).
- `notify(ready=True, status="...", watchdog=True, stopping=True, **extra)` sends one datagram
  of ``KEY=VALUE`` lines (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1; any other keyword becomes
  its upper-case key) to the AF_UNIX datagram socket; an address starting with '@' is in the
  abstract namespace. It never blocks and never raises: a full or vanished socket is logged
  once and the call returns False. A STATUS with line breaks is sent as one line.
- `watchdog_interval()` is half of WATCHDOG_USEC in seconds, or None when systemd did not ask
  for pings or asked another process (WATCHDOG_PID set to a pid that is not ours).
- `run_watchdog(notifier, interval)` pings WATCHDOG=1 from the event loop, once at once and then
  every `interval` seconds, until cancelled. Pinging from the loop itself is the point: a wedged
  loop stops pinging and systemd restarts the service; an API outage does not (the loop is fine).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

__all__ = ["Notifier", "run_watchdog", "watchdog_interval"]

log = structlog.get_logger(__name__)


def _socket_address(value: str) -> str | bytes:
    """NOTIFY_SOCKET -> the address for connect(); '@name' is the abstract name '\\0name'."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def _format_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    # A line break would end the field early and start a bogus one.
    return " ".join(str(value).splitlines())


class Notifier:
    """Sends notifications to the service manager at `address` (None: disabled)."""

    def __init__(self, address: str | None) -> None:
        self._address = address or None
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(
        self,
        *,
        ready: bool = False,
        status: str | None = None,
        watchdog: bool = False,
        stopping: bool = False,
        **extra: str | int | bool,
    ) -> bool:
        """Send the given fields as one datagram; True if it was handed to the socket."""
        fields: dict[str, str | int | bool] = {}
        if ready:
            fields["READY"] = True
        if stopping:
            fields["STOPPING"] = True
        if status is not None:
            fields["STATUS"] = status
        if watchdog:
            fields["WATCHDOG"] = True
        fields.update((key.upper(), value) for key, value in extra.items())
        if self._address is None or not fields:
            return False
        message = "".join(f"{key}={_format_value(value)}\n" for key, value in fields.items())
        return self._send(message.encode("utf-8"))

    def _send(self, data: bytes) -> bool:
        assert self._address is not None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop on a slow service manager: a dropped ping is
                # followed by another one, a blocked loop by nothing.
                sock.setblocking(False)
                sock.connect(_socket_address(self._address))
                sock.send(data)
        except OSError as error:
            if not self._failing:
                log.warning(
                    "sd_notify_failed",
                    socket=self._address,
                    error=str(error),
                    message=data[:60].decode("utf-8", "replace"),
                )
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify_recovered", socket=self._address)
            self._failing = False
        return True


def watchdog_interval(
    environ: Mapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None for no pings."""
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    pid_text = env.get("WATCHDOG_PID")
    if pid_text:
        try:
            if int(pid_text) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            log.warning("watchdog_pid_invalid", value=pid_text)
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.warning("watchdog_usec_invalid", value=usec_text)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


async def run_watchdog(notifier: Notifier, interval: float) -> None:
    """Ping WATCHDOG=1 now and every `interval` seconds, from the loop, until cancelled."""
    log.info("watchdog_started", interval_seconds=interval)
    while True:
        notifier.notify(watchdog=True)
        await asyncio.sleep(interval)
