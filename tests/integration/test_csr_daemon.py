"""`nodehosts run --approve-serving-csrs`: the daemon approves honest kubelet serving CSRs,
leaves the rest pending, and says why in `nodehosts dump --from daemon`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing import fake_csr
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.csrs import make_csr
from tests.helpers.daemon import nodehosts, start_daemon
from tests.helpers.polling import wait_until

TOKEN = "csr-token"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN, lab_node("worker-0", "10.240.0.101"), lab_node("worker-1", "10.240.0.102")
    ) as server:
        fake_csr.install(server)
        yield server


def approved(api: FakeApiServer, name: str) -> bool:
    return any(
        c.get("type") == "Approved" and c.get("status") == "True"
        for c in fake_csr.approval_conditions(api, name)
    )


def test_the_daemon_approves_honest_csrs_and_explains_the_rest(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Honest: approved. Another node's IP: pending, with the rule in dump's report."""
    hosts_dir = tmp_path / "hosts"
    hosts_dir.mkdir()
    socket = tmp_path / "control.sock"
    honest = make_csr(
        "worker-0",
        name="csr-honest",
        dns=["worker-0", "worker-0.node.internal"],
        ips=["10.240.0.101"],
    )
    thief = make_csr("worker-1", name="csr-thief", dns=["worker-1"], ips=["10.240.0.101"])
    api.add_object("certificatesigningrequests", honest)
    with start_daemon(
        api,
        tmp_path,
        "--hosts-file",
        str(hosts_dir / "nodes.hosts"),
        "--control-socket",
        str(socket),
        "--approve-serving-csrs",
        token=TOKEN,
    ) as daemon:
        wait_until(lambda: approved(api, "csr-honest"), timeout=15, what="csr-honest approved")
        api.add_object("certificatesigningrequests", thief)

        def pending() -> dict[str, str]:
            result = nodehosts(
                "dump",
                "--from",
                "daemon",
                "--control-socket",
                str(socket),
                "--format",
                "json",
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout)
            return {entry["name"]: entry["reason"] for entry in report["csrs"]["pending"]}

        reasons = wait_until(pending, until=lambda p: "csr-thief" in p, timeout=15, what="pending")
        assert reasons["csr-thief"] == "ip_san_not_node_address"
        assert not approved(api, "csr-thief")
        assert daemon.process.poll() is None


def test_the_daemon_judges_with_its_static_hosts_and_domain(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """The static file's `10.240.0.41 lb` loses its only name to `10.240.0.40 lb-0 lb` and is
    published nowhere, yet its address is the admin's; `kubernetes.<domain>` is the API
    server's. A node reporting both gets neither, and its own names and address still pass."""
    static = tmp_path / "static.hosts"
    static.write_text("10.240.0.40 lb-0 lb\n10.240.0.41 lb\n")
    socket = tmp_path / "control.sock"
    (tmp_path / "hosts").mkdir()
    api.add_object(
        "nodes",
        make_node(
            "worker-9",
            addresses=[("InternalIP", "10.240.0.109"), ("InternalIP", "10.240.0.41")],
            hostname="kubernetes",
        ),
    )
    for name, dns, ips in (
        ("csr-lb", ["worker-9"], ["10.240.0.41"]),
        ("csr-kubernetes", ["kubernetes.k8s.lab"], ["10.240.0.109"]),
        ("csr-own", ["worker-9", "worker-9.k8s.lab"], ["10.240.0.109"]),
    ):
        api.add_object(
            "certificatesigningrequests", make_csr("worker-9", name=name, dns=dns, ips=ips)
        )
    with start_daemon(
        api,
        tmp_path,
        "--static-hosts",
        str(static),
        "--hosts-file",
        str(tmp_path / "hosts" / "nodes.hosts"),
        "--domain",
        "k8s.lab",
        "--control-socket",
        str(socket),
        "--approve-serving-csrs",
        token=TOKEN,
    ) as daemon:
        wait_until(lambda: approved(api, "csr-own"), timeout=15, what="csr-own approved")

        def pending() -> dict[str, str]:
            result = nodehosts(
                "dump",
                "--from",
                "daemon",
                "--control-socket",
                str(socket),
                "-o",
                "json",
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            return {e["name"]: e["reason"] for e in json.loads(result.stdout)["csrs"]["pending"]}

        reasons = wait_until(pending, until=lambda p: len(p) == 2, timeout=15, what="pending")
        assert reasons == {"csr-lb": "ip_san_static_host", "csr-kubernetes": "dns_san_reserved"}
        assert not approved(api, "csr-lb") and not approved(api, "csr-kubernetes")
        assert daemon.process.poll() is None
