"""`nodehosts run --approve-serving-csrs --label-selector ...` when the whole-cluster Node
watch (the daemon's cluster view, which feeds the approver) crashes (a bug: it retries API
errors itself): the daemon must not live on approving with a frozen copy of the cluster; it
logs the crash and exits non-zero, for systemd to restart it.

The bug is injected into the real cluster view source in the real CLI process (a wrapper whose
task raises a second after it started listing); everything else is real: the client over HTTP
against the fake API server, the daemon's tasks and its exit code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nodehosts.testing import fake_csr
from nodehosts.testing.fake_apiserver import make_node
from tests.helpers.cluster import fake_api

TOKEN = "csr-crash-token"
CHILD = """
import asyncio, sys
import nodehosts.app.clusterview as clusterview

build = clusterview.cluster_source

class CrashingClusterSource:
    def __init__(self, inner):
        self.inner = inner

    def restart(self):
        self.inner.restart()

    async def run(self):
        watching = asyncio.create_task(self.inner.run())
        await asyncio.sleep(1.0)
        watching.cancel()
        raise RuntimeError("bug in the cluster watch")

clusterview.cluster_source = lambda daemon, generation: CrashingClusterSource(
    build(daemon, generation)
)
from nodehosts.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_crashed_cluster_watch_ends_the_daemon_with_an_error(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()
    worker = make_node("worker-1", addresses=["10.240.0.101"], labels={"role": "worker"})
    with fake_api(TOKEN, worker) as api:
        fake_csr.install(api)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                "run",
                "--config",
                "",
                "--kubeconfig",
                str(kubeconfig),
                "--label-selector",
                "role=worker",
                "--approve-serving-csrs",
                "--hosts-file",
                str(tmp_path / "hosts" / "nodes.hosts"),
                "--control-socket",
                "",
                "--state-dir",
                "",
                "--log-format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode not in (0, None), result.stderr
    events = []
    for line in result.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    crashed = [e for e in events if e.get("event") == "task_failed"]
    assert crashed and crashed[0]["task"] == "cluster_view", result.stderr
    assert "bug in the cluster watch" in crashed[0]["error"], result.stderr
    # It got as far as publishing: the crash, not a startup problem, ended it.
    assert any(e.get("event") == "ready" for e in events), result.stderr
