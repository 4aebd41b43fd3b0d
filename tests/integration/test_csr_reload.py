"""`nodehosts run --approve-serving-csrs` across a reload that changes the label selector.

Between the reload and the new source's first LIST, the daemon still holds the Nodes listed
with the old selector. The approver must judge them with that selector (the whole-cluster
view it keeps while publishing is selected), never as if they were the whole cluster.
The real CLI process, the real client against the fake API server, real x509 requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodehosts.testing import fake_csr
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.cluster import fake_api
from tests.helpers.csrs import make_csr
from tests.helpers.daemon import DaemonProcess, nodehosts
from tests.helpers.polling import wait_until

TOKEN = "csr-reload-token"
CONTROLLER_0 = make_node("controller-0", addresses=["10.240.0.10"], labels={"role": "controller"})
# A selected worker whose kubelet also reports controller-0's address.
WORKER_1 = make_node(
    "worker-1", addresses=["10.240.0.101", "10.240.0.10"], labels={"role": "worker"}
)

# Published once the reload allows example.com: shows that the reload's records are out.
DB = make_node("db.example.com", addresses=["10.240.0.150"], labels={"role": "worker"})


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, CONTROLLER_0, WORKER_1, DB) as server:
        fake_csr.install(server)
        yield server


def approved(api: FakeApiServer, name: str) -> bool:
    return any(c.get("type") == "Approved" for c in fake_csr.approval_conditions(api, name))


def write_config(tmp_path: Path, selector: str | None, suffixes: list[str]) -> Path:
    config = tmp_path / "config.toml"
    selector_line = f'label_selector = "{selector}"\n' if selector else ""
    config.write_text(
        f'[kubernetes]\nkubeconfig = "{tmp_path}/kubeconfig"\n{selector_line}'
        f"[records]\nallowed_suffixes = {json.dumps(suffixes)}\n"
        f'[hosts]\nfile = "{tmp_path}/hosts/nodes.hosts"\n'
        f'[control]\nsocket = "{tmp_path}/control.sock"\n'
        '[state]\ndir = ""\n[csr]\napprove = true\n'
    )
    return config


def pending(tmp_path: Path) -> dict[str, str]:
    result = nodehosts(
        "dump",
        "--from",
        "daemon",
        "--control-socket",
        str(tmp_path / "control.sock"),
        "--format",
        "json",
        timeout=30,
    )
    if result.returncode != 0:
        return {}
    report: dict[str, Any] = json.loads(result.stdout)
    return {entry["name"]: entry["reason"] for entry in report.get("csrs", {}).get("pending", [])}


def test_clearing_the_selector_never_lets_the_old_selected_nodes_pass_for_the_whole_cluster(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """worker-1 claims controller-0's 10.240.0.10: pending before the reload, and still
    pending after it while the new LIST fails, though worker-1's honest CSR is approved then."""
    (tmp_path / "hosts").mkdir()
    api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    api.add_object(
        "certificatesigningrequests",
        make_csr("worker-1", name="csr-claim", dns=["worker-1"], ips=["10.240.0.10"]),
    )
    config = write_config(tmp_path, "role=worker", [])
    with DaemonProcess(["--config", str(config)], workdir=tmp_path) as daemon:
        reasons = wait_until(
            lambda: pending(tmp_path),
            until=lambda p: "csr-claim" in p,
            timeout=30,
            what="csr-claim left pending",
        )
        assert reasons["csr-claim"] == "ip_san_shared"
        # The unselected LIST fails: the daemon keeps the Nodes it listed with the selector.
        # The config file watcher applies the edit (the CSR watch goes on; a SIGHUP would
        # also relist it); a record-policy key in the same edit publishes again at once.
        api.fail_next(100_000, status=500, verbs=["list"])
        write_config(tmp_path, None, ["example.com"])
        hosts = tmp_path / "hosts" / "nodes.hosts"
        wait_until(
            lambda: "db.example.com" in hosts.read_text(),
            timeout=30,
            what="the reloaded record policy published",
        )
        assert daemon.events_named("node_source_replaced")
        # A CSR that must be approved now: once it is, csr-claim was judged after the reload.
        api.add_object(
            "certificatesigningrequests",
            make_csr("worker-1", name="csr-own", dns=["worker-1"], ips=["10.240.0.101"]),
        )
        wait_until(lambda: approved(api, "csr-own"), timeout=30, what="csr-own approved")
        assert pending(tmp_path).get("csr-claim") == "ip_san_shared"
        assert not approved(api, "csr-claim"), daemon.log_text()
        assert daemon.process.poll() is None
