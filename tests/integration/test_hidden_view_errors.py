"""The cluster view's failures, as `dump` shows them: an error while it goes on, gone after.

The real Daemon in this process against the fake API server over real HTTP, with a label
selector (so the unselected view of every Node runs), in both of its shapes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nodehosts.app.daemon import Daemon
from nodehosts.config import Settings
from nodehosts.core.status import systemd_status
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.polling import CEILING, until


def view(daemon: Daemon) -> dict[str, Any]:
    shown: dict[str, Any] = daemon.dump({})["cluster_view"]
    return shown


@pytest.mark.parametrize("approver", [False, True], ids=["names-only", "with-approver"])
async def test_the_views_error_goes_once_it_recovers(tmp_path: Path, approver: bool) -> None:
    with FakeApiServer() as api:
        api.add_object("nodes", make_node("controller-0", addresses=["10.240.0.10"]))
        api.add_object(
            "nodes", make_node("worker-1", addresses=["10.240.0.101"], labels={"role": "worker"})
        )
        if approver:
            from nodehosts.testing import fake_csr

            fake_csr.install(api)
        daemon = Daemon(
            Settings(
                kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
                hosts_file=tmp_path / "nodes.hosts",
                state_dir=None,
                control_socket=None,
                label_selector="role=worker",
                approve_serving_csrs=approver,
            )
        )
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.board.ready.wait(), CEILING)
            await until(lambda: api.watch_count >= 2, "both Node watches")
            assert view(daemon) == {"listed": True, "last_error": None}

            seen: list[Any] = []
            api.fail_next(4, verbs=["watch"])
            api.drop_watches()
            await until(
                lambda: seen.append(view(daemon)["last_error"]) or seen[-1] is not None,
                "the view's error in dump",
            )
            assert seen[-1]["reason"] in {"connection_lost", "server_error"}
            assert "; cluster view API error since " in systemd_status(daemon.status)
            await until(lambda: view(daemon)["last_error"] is None, "the view's error cleared")
            assert view(daemon)["listed"] is True
        finally:
            daemon.stop()
            await asyncio.wait_for(task, CEILING)
        assert daemon.failed_task is None
