"""The real CoreDNS, with the lab's coredns/Corefile, serving the hosts file the real daemon writes.

nodehosts runs as a subprocess against the fake API server (tests/helpers/daemon.py) and writes
its hosts file; CoreDNS 1.14.7 (built by scripts/upstream-bin) runs coredns/Corefile with only
ports and paths moved to loopback and a temp directory (rewrite rules: tests/helpers/coredns.py),
forwarding to a dnsmasq stand-in upstream that knows upstream.example and answers NXDOMAIN for
the rest of `internal` (as a public resolver would for that reserved name). Every change
nodehosts writes must be answered within what the Corefile allows (its `reload` interval plus its
`cache` TTL); the wait has a generous ceiling and the tests assert the answer, not the speed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.coredns import CoreDNS, change_ceiling, loopback_corefile
from tests.helpers.daemon import DaemonProcess, start_daemon
from tests.helpers.dig import reverse_name
from tests.helpers.dnsmasq import Dnsmasq, stand_in_upstream
from tests.helpers.upstream import REPO

TOKEN = "coredns-consumer-token"
COREFILE = REPO / "coredns" / "Corefile"
CEILING = change_ceiling(COREFILE.read_text())


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN, lab_node("controller-0", "10.240.0.10"), lab_node("worker-0", "10.240.0.101")
    ) as server:
        yield server


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = stand_in_upstream(tmp_path)
    server.args += ("--local=/internal/",)
    server.log_queries = True
    with server:
        yield server


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    directory = tmp_path / "hosts"
    directory.mkdir()
    return directory / "nodes.hosts"


@pytest.fixture
def coredns(tmp_path: Path, hosts_file: Path, upstream: Dnsmasq) -> Iterator[CoreDNS]:
    """Started before nodehosts has written anything: the file does not exist yet."""
    text = loopback_corefile(
        COREFILE.read_text(), hosts_file=hosts_file, upstream=f"127.0.0.1:{upstream.port}"
    )
    with CoreDNS(text, tmp_path / "coredns") as server:
        yield server


@pytest.fixture
def daemon(
    api: FakeApiServer, tmp_path: Path, hosts_file: Path, coredns: CoreDNS
) -> Iterator[DaemonProcess]:
    workdir = tmp_path / "nodehosts"
    with start_daemon(api, workdir, "--hosts-file", str(hosts_file), token=TOKEN) as process:
        coredns.wait_for_answer("worker-0.node.internal", "A", ["10.240.0.101"], timeout=CEILING)
        yield process


def upstream_saw(upstream: Dnsmasq, qtype: str, name: str) -> bool:
    return re.search(rf"query\[{qtype}\] {re.escape(name)} from", upstream.log()) is not None


def test_the_file_nodehosts_writes_is_served(coredns: CoreDNS, daemon: DaemonProcess) -> None:
    """FQDN and bare name, both PTRs, and the first publication after CoreDNS started."""
    for name, address in (("controller-0", "10.240.0.10"), ("worker-0", "10.240.0.101")):
        fqdn = coredns.query(f"{name}.node.internal")
        assert (fqdn.status, fqdn.data()) == ("NOERROR", [address])
        assert "aa" in fqdn.flags
        assert coredns.dig(name) == [address]
    # The hosts plugin answers a reverse lookup with every name on the line.
    assert sorted(coredns.dig(reverse_name("10.240.0.101"), "PTR")) == [
        "worker-0.",
        "worker-0.node.internal.",
    ]


def test_other_types_of_a_node_name_are_nodata_and_never_forwarded(
    coredns: CoreDNS, daemon: DaemonProcess, upstream: Dnsmasq
) -> None:
    """AAAA of an IPv4-only node, TXT and MX: empty authoritative answers (CoreDNS 1.14.7)."""
    for name in ("worker-0", "worker-0.node.internal"):
        for qtype in ("AAAA", "TXT", "MX"):
            response = coredns.query(name, qtype)
            assert (response.status, response.answer) == ("NOERROR", ()), (name, qtype)
            assert "aa" in response.flags
            assert not upstream_saw(upstream, qtype, name), (name, qtype)


def test_names_not_in_the_file_go_upstream(
    coredns: CoreDNS, daemon: DaemonProcess, upstream: Dnsmasq
) -> None:
    """A node name nobody has gets the upstream's NXDOMAIN; other names the upstream's answer."""
    missing = coredns.query("worker-404.node.internal")
    assert (missing.status, missing.answer) == ("NXDOMAIN", ())
    assert upstream_saw(upstream, "A", "worker-404.node.internal")
    assert coredns.dig("upstream.example") == ["192.0.2.7"]
    assert coredns.dig("upstream.example", tcp=True) == ["192.0.2.7"]


def test_join_dhcp_change_and_leave_are_answered(
    api: FakeApiServer, coredns: CoreDNS, daemon: DaemonProcess
) -> None:
    """Each write nodehosts makes for a cluster change reaches CoreDNS's answers."""
    api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
    coredns.wait_for_answer("worker-1", "A", ["10.240.0.150"], timeout=CEILING)
    assert coredns.dig("worker-1.node.internal") == ["10.240.0.150"]

    # Same name, new address (a new DHCP lease): the old one may stay cached for `cache` s.
    api.modify_object("nodes", lab_node("worker-1", "10.240.0.151"))
    coredns.wait_for_answer("worker-1.node.internal", "A", ["10.240.0.151"], timeout=CEILING)
    coredns.wait_for_answer("worker-1", "A", ["10.240.0.151"], timeout=CEILING)
    assert coredns.dig(reverse_name("10.240.0.150"), "PTR") == []

    api.delete_object("nodes", "worker-1")
    coredns.wait_for_answer("worker-1.node.internal", "A", [], timeout=CEILING)
    assert coredns.query("worker-1.node.internal").status == "NXDOMAIN"
    assert coredns.dig("worker-0") == ["10.240.0.101"]
    assert daemon.process.poll() is None


def test_a_burst_of_same_size_rewrites_ends_on_the_last(
    api: FakeApiServer, coredns: CoreDNS, daemon: DaemonProcess
) -> None:
    """CoreDNS re-reads only when mtime or size changed: eight address changes of one node in a
    row keep the file's size, and the answer still ends on the last one (nodehosts makes every
    write's mtime increase). An answer cached while waiting is covered by the ceiling."""
    api.add_object("nodes", lab_node("worker-2", "10.240.0.161"))
    for last in range(162, 170):
        api.modify_object("nodes", lab_node("worker-2", f"10.240.0.{last}"))
    coredns.wait_for_answer("worker-2.node.internal", "A", ["10.240.0.169"], timeout=CEILING)
    assert coredns.dig("worker-2") == ["10.240.0.169"]
