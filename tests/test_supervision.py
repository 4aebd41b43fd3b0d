"""Supervision (issue 12): an internal task that crashes is logged and ends the daemon with a
non-zero exit at once (systemd restarts it), instead of a half-dead daemon that serves on with
a dead publisher, source or reload task."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from nodehosts.app.daemon import Daemon, run_daemon
from nodehosts.config import Settings, build_settings


def settings(tmp_path: Path) -> Settings:
    return build_settings(
        {},
        {
            "hosts_file": str(tmp_path / "nodes.hosts"),
            "control_socket": "",
            "state_dir": "",
            "kubeconfig": None,
        },
    )


class CrashingSource:
    """A Node source with a bug: it dies after a moment."""

    def __init__(self, _daemon: Daemon) -> None:
        pass

    async def run(self) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("bug in the source")

    def restart(self) -> None:
        pass


class IdleSource(CrashingSource):
    async def run(self) -> None:
        await asyncio.Event().wait()


async def run_with_timeout(daemon: Daemon) -> int:
    async with asyncio.timeout(20):  # generous: it must end by itself, promptly
        return await run_daemon(daemon)


async def test_a_crashed_source_task_ends_the_daemon_non_zero(tmp_path: Path) -> None:
    daemon = Daemon(settings(tmp_path), source_factory=CrashingSource)
    with capture_logs() as logs:
        code = await run_with_timeout(daemon)
    assert code != 0
    failed = [entry for entry in logs if entry["event"] == "task_failed"]
    assert len(failed) == 1 and failed[0]["task"] == "node_source", logs
    assert "bug in the source" in failed[0]["error"]


async def test_a_crashed_background_task_ends_the_daemon_non_zero(tmp_path: Path) -> None:
    """A reload that dies of an unexpected error used to vanish silently; later reloads then
    never happened. Now the daemon says so and exits for systemd to restart it."""

    def broken_reload() -> Any:
        raise RuntimeError("bug in the reload")

    daemon = Daemon(settings(tmp_path), source_factory=IdleSource, reload_settings=broken_reload)
    asyncio.get_running_loop().call_later(0.3, daemon.request_reload, "SIGHUP")
    with capture_logs() as logs:
        code = await run_with_timeout(daemon)
    assert code != 0
    failed = [entry for entry in logs if entry["event"] == "task_failed"]
    assert [entry["task"] for entry in failed] == ["reload"], logs


async def test_a_clean_stop_is_exit_0(tmp_path: Path) -> None:
    """Background tasks that finish their job (a reload) are no failure."""
    config = settings(tmp_path)
    daemon = Daemon(config, source_factory=IdleSource, reload_settings=lambda: config)
    asyncio.get_running_loop().call_later(0.1, daemon.request_reload, "SIGHUP")

    async def stop_after_the_reload() -> None:
        # Not after a fixed time: on a loaded machine the reload may take longer than that.
        while "reload_finished" not in [entry["event"] for entry in logs]:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the finished task's done callbacks run meanwhile
        daemon.stop()

    with capture_logs() as logs:
        stopper = asyncio.create_task(stop_after_the_reload())
        assert await run_with_timeout(daemon) == 0
        await stopper
    assert "reload_finished" in [entry["event"] for entry in logs]
    assert "task_failed" not in [entry["event"] for entry in logs]
