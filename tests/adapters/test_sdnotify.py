"""sd_notify over a real AF_UNIX datagram socket that the test binds, as systemd would."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.adapters.sdnotify import Notifier, run_watchdog, watchdog_interval


class ServiceManager:
    """The receiving end of NOTIFY_SOCKET: collects datagrams as {KEY: VALUE} dicts."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(2.0)

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        assert data.endswith("\n")
        return dict(line.split("=", 1) for line in data.splitlines())

    def pending(self) -> list[dict[str, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                out.append(dict(line.split("=", 1) for line in data.splitlines()))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(2.0)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager() -> Iterator[ServiceManager]:
    # A short directory: AF_UNIX paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="nh-") as directory:
        server = ServiceManager(str(Path(directory) / "notify"))
        yield server
        server.close()


def test_ready_and_status_arrive_as_one_datagram(manager: ServiceManager) -> None:
    """READY=1 and STATUS=... are sent together, as systemd expects them."""
    notifier = Notifier(manager.address)
    assert notifier.notify(ready=True, status="3 nodes published, generation 1")
    assert manager.receive() == {"READY": "1", "STATUS": "3 nodes published, generation 1"}


def test_stopping_and_watchdog_and_extra_fields(manager: ServiceManager) -> None:
    """STOPPING=1, WATCHDOG=1 and any other field reach the service manager."""
    notifier = Notifier(manager.address)
    notifier.notify(stopping=True)
    notifier.notify(watchdog=True)
    notifier.notify(mainpid=1234)
    assert manager.receive() == {"STOPPING": "1"}
    assert manager.receive() == {"WATCHDOG": "1"}
    assert manager.receive() == {"MAINPID": "1234"}


def test_status_with_line_breaks_stays_one_field(manager: ServiceManager) -> None:
    """A multi-line status cannot inject other fields."""
    Notifier(manager.address).notify(status="bad\nREADY=1")
    assert manager.receive() == {"STATUS": "bad READY=1"}


def test_abstract_namespace_socket() -> None:
    """An address starting with '@' is an abstract socket."""
    manager = ServiceManager(f"@nodehosts-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        assert Notifier(manager.address).notify(ready=True)
        assert manager.receive() == {"READY": "1"}
    finally:
        manager.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    """Outside systemd notify() is a harmless no-op."""
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.notify(ready=True, status="x") is False


def test_from_environ_reads_notify_socket(manager: ServiceManager) -> None:
    """The address comes from NOTIFY_SOCKET."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": manager.address})
    assert notifier.enabled
    notifier.notify(ready=True)
    assert manager.receive() == {"READY": "1"}


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    """A service manager that went away makes notify() return False, not raise."""
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.notify(ready=True) is False
    assert notifier.notify(watchdog=True) is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """systemd recommends pinging at half the timeout."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "77"}, pid=77) == 15.0


def test_watchdog_interval_none_when_not_for_us() -> None:
    """No WATCHDOG_USEC, another process's WATCHDOG_PID or garbage: no pings."""
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


async def test_watchdog_pings_regularly(manager: ServiceManager) -> None:
    """The pinger sends WATCHDOG=1 at once and then every interval."""
    task = asyncio.create_task(run_watchdog(Notifier(manager.address), 0.02))
    try:
        pings = []
        for _ in range(3):
            pings.append(await asyncio.to_thread(manager.receive))
    finally:
        task.cancel()
    assert pings == [{"WATCHDOG": "1"}] * 3


async def test_a_wedged_loop_stops_the_pings(manager: ServiceManager) -> None:
    """While the event loop is blocked no ping is sent, so systemd can notice."""
    task = asyncio.create_task(run_watchdog(Notifier(manager.address), 0.02))
    try:
        await asyncio.sleep(0.1)
        manager.pending()  # drop the pings sent so far
        time.sleep(0.3)  # wedge the loop on purpose
        assert manager.pending() == []
        await asyncio.sleep(0.1)
        assert manager.pending() != []
    finally:
        task.cancel()
