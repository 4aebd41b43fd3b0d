"""The daemon against Nodes whose kubelets lie (issue 12, items 1 and 2), end to end.

The real CLI process, the real kubernetes client against the fake API server, the real x509
requests, and real dig against the daemon's DNS server on loopback. A Node's status is written
by its own kubelet (anyone holding the bootstrap token can register one), so what it claims
must not become DNS records or certificates for names and addresses that are someone else's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodehosts.testing import fake_csr
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers import dig
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.csrs import make_csr
from tests.helpers.daemon import DaemonProcess, nodehosts, start_dns_daemon
from tests.helpers.polling import wait_until

TOKEN = "untrusted-token"
LOCAL = "127.0.0.1"
LB = "10.240.0.40"
SERVICE_NAME = "kubernetes.default.svc.cluster.local"
# Registered with the bootstrap token: its kubelet reports the kubernetes Service's name as its
# Hostname and the LB's address as its ExternalIP.
EVIL = make_node(
    "worker-9",
    addresses=[("InternalIP", "10.240.0.109"), ("ExternalIP", LB)],
    hostname=SERVICE_NAME,
)
API_NODE = make_node("api.example.com", addresses=["10.240.0.150"])


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101"), EVIL, API_NODE) as server:
        fake_csr.install(server)
        yield server


def approved(api: FakeApiServer, name: str) -> bool:
    return any(
        c.get("type") == "Approved" and c.get("status") == "True"
        for c in fake_csr.approval_conditions(api, name)
    )


def wait_answer(port: int, name: str, expected: list[str], daemon: DaemonProcess) -> None:
    """Until `name` answers `expected` (the daemon has to start, list the Nodes and bind)."""

    def answer() -> list[str] | None:
        try:
            return dig.dig(LOCAL, port, name)
        except dig.DigError:
            return None  # not listening yet

    try:
        wait_until(answer, until=lambda got: got == expected, timeout=20, what=f"{name} answered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- daemon log ---\n{daemon.log_text()}") from None


def dump(socket: Path) -> dict[str, Any]:
    result = nodehosts(
        "dump", "--from", "daemon", "--control-socket", str(socket), "--format", "json", timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run(api: FakeApiServer, tmp_path: Path, *extra: str) -> tuple[DaemonProcess, int]:
    """The daemon serving DNS on a free port of LOCAL (retried when taken): (daemon, port)."""
    static = tmp_path / "static.hosts"
    static.write_text(f"{LB} lb-0\n")
    return start_dns_daemon(
        api,
        tmp_path,
        "--static-hosts",
        str(static),
        "--control-socket",
        str(tmp_path / "control.sock"),
        "--approve-serving-csrs",
        *extra,
        address=LOCAL,
        token=TOKEN,
    )


def test_a_node_claiming_the_service_name_and_the_lbs_address_gets_neither(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """DNS does not answer kubernetes.default.svc.cluster.local or api.example.com with a
    node's address, lb-0 stays the LB's, and the approver leaves the lying CSRs pending."""
    csrs = {
        "csr-honest": make_csr(
            "worker-0", name="csr-honest", dns=["worker-0"], ips=["10.240.0.101"]
        ),
        "csr-worker-9": make_csr(
            "worker-9", name="csr-worker-9", dns=["worker-9"], ips=["10.240.0.109"]
        ),
        "csr-service-name": make_csr(
            "worker-9", name="csr-service-name", dns=["worker-9", SERVICE_NAME], ips=[]
        ),
        "csr-lb-ip": make_csr("worker-9", name="csr-lb-ip", dns=[], ips=[LB]),
        "csr-api": make_csr("api.example.com", name="csr-api", dns=["api.example.com"], ips=[]),
    }
    # An ExternalIP may be an IP SAN here: the LB's address must still be refused.
    daemon, port = run(api, tmp_path, "--csr-address-types", "InternalIP,ExternalIP")
    with daemon:
        wait_answer(port, "worker-0", ["10.240.0.101"], daemon)
        for csr in csrs.values():
            api.add_object("certificatesigningrequests", csr)

        service = dig.query(LOCAL, port, SERVICE_NAME)
        assert (service.status, service.data()) == ("REFUSED", [])
        api_name = dig.query(LOCAL, port, "api.example.com")
        assert (api_name.status, api_name.data()) == ("REFUSED", [])
        assert dig.dig(LOCAL, port, "lb-0") == [LB]
        assert dig.dig(LOCAL, port, dig.reverse_name(LB), "PTR") == ["lb-0.node.internal."]
        # worker-9 keeps what is its own: its name and its InternalIP.
        assert dig.dig(LOCAL, port, "worker-9") == ["10.240.0.109"]

        for name in ("csr-honest", "csr-worker-9"):
            wait_until(lambda n=name: approved(api, n), timeout=15, what=f"{name} approved")
        pending = wait_until(
            lambda: {
                e["name"]: e["reason"] for e in dump(tmp_path / "control.sock")["csrs"]["pending"]
            },
            until=lambda p: len(p) == 3,
            timeout=15,
            what="the three lying CSRs to be pending",
        )
        assert pending == {
            "csr-service-name": "dns_san_not_published",
            "csr-lb-ip": "ip_san_static_host",
            "csr-api": "dns_san_not_published",
        }
        for name in pending:
            assert fake_csr.approval_conditions(api, name) == []

        report = dump(tmp_path / "control.sock")
        nodes = {entry["name"]: entry for entry in report["nodes"]}
        assert not nodes["api.example.com"]["published"]
        assert "--allowed-suffix example.com" in nodes["api.example.com"]["reason"]
        assert SERVICE_NAME in nodes["worker-9"]["reason"]
        assert "reserved" in nodes["worker-9"]["reason"]
        assert nodes["worker-9"]["names"] == ["worker-9.node.internal", "worker-9"]
        assert daemon.process.poll() is None


def test_an_allowed_suffix_publishes_a_dotted_node_name(api: FakeApiServer, tmp_path: Path) -> None:
    """--allowed-suffix example.com is how the admin says api.example.com may be a node's.
    With ExternalIP preferred, worker-9's address would be the LB's: it is skipped instead."""
    extra = ("--allowed-suffix", "example.com", "--address-types", "ExternalIP,InternalIP")
    daemon, port = run(api, tmp_path, *extra)
    with daemon:
        wait_answer(port, "api.example.com", ["10.240.0.150"], daemon)
        service = dig.query(LOCAL, port, SERVICE_NAME)
        assert (service.status, service.data()) == ("REFUSED", [])
        assert dig.dig(LOCAL, port, "lb-0") == [LB]
        assert dig.dig(LOCAL, port, "worker-9.node.internal") == []
        nodes = {entry["name"]: entry for entry in dump(tmp_path / "control.sock")["nodes"]}
        assert not nodes["worker-9"]["published"]
        reason = nodes["worker-9"]["reason"]
        assert f"{LB} is the address of static host 'lb-0.node.internal'" in reason


def test_a_selector_limited_daemon_refuses_a_worker_claiming_a_controllers_ip(
    tmp_path: Path,
) -> None:
    """--label-selector role=worker: the approver still sees controller-0's 10.240.0.10."""
    controller = make_node("controller-0", addresses=["10.240.0.10"], labels={"role": "controller"})
    worker = make_node(
        "worker-1", addresses=["10.240.0.101", "10.240.0.10"], labels={"role": "worker"}
    )
    with fake_api(TOKEN, controller, worker) as api:
        fake_csr.install(api)
        api.add_object(
            "certificatesigningrequests",
            make_csr("worker-1", name="csr-claim", dns=["worker-1"], ips=["10.240.0.10"]),
        )
        api.add_object(
            "certificatesigningrequests",
            make_csr("worker-1", name="csr-own", dns=["worker-1"], ips=["10.240.0.101"]),
        )
        daemon, port = run(api, tmp_path, "--label-selector", "role=worker")
        with daemon:
            wait_until(lambda: approved(api, "csr-own"), timeout=20, what="worker-1's own CSR")
            pending = wait_until(
                lambda: {e["name"]: e for e in dump(tmp_path / "control.sock")["csrs"]["pending"]},
                until=lambda p: "csr-claim" in p,
                timeout=15,
                what="csr-claim pending",
            )
            assert pending["csr-claim"]["reason"] == "ip_san_shared"
            assert "controller-0" in pending["csr-claim"]["message"]
            assert not approved(api, "csr-claim")
            # Published: the selected worker only.
            assert dig.dig(LOCAL, port, "controller-0") == []
            assert daemon.process.poll() is None
