"""`nodehosts run --dns-listen`: Nodes changed through the (fake) API are answered over DNS.

The real CLI process, the real kubernetes client against the fake API server, queried with
dig and dnspython on loopback; forwarding to a real dnsmasq. What is asserted is that changes
arrive, within generous ceilings; how fast (100 ms p99) is bench/dns/change_latency.py's target
(bench/README.md, "DNS change latency").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers import dig
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import DaemonProcess, start_dns_daemon
from tests.helpers.dnsmasq import Dnsmasq
from tests.helpers.polling import wait_until

TOKEN = "test-token"
LOCAL = "127.0.0.1"
# A change reaches DNS in milliseconds; the ceiling only bounds a failing test on a busy machine.
CHANGE_TIMEOUT = 20.0


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101")) as server:
        yield server


def run_daemon(api: FakeApiServer, tmp_path: Path, *extra: str) -> tuple[DaemonProcess, int]:
    """The daemon answering DNS on a free port (and publishing no hosts file), and the port."""
    return start_dns_daemon(api, tmp_path, *extra, address=LOCAL, token=TOKEN)


def lookup(port: int, name: str) -> tuple[str, list[str]]:
    """(rcode name, addresses) with dnspython over UDP; ("TIMEOUT", []) if nothing came back."""
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), LOCAL, port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return "TIMEOUT", []
    addresses = sorted(rd.to_text() for rrset in reply.answer for rd in rrset)
    return dns.rcode.to_text(reply.rcode()), addresses


def wait_answer(port: int, name: str, expected: tuple[str, list[str]]) -> None:
    """Poll until `name` answers `expected`."""
    wait_until(
        lambda: lookup(port, name),
        until=lambda got: got == expected,
        timeout=CHANGE_TIMEOUT,
        interval=0.02,
        what=f"{name} to answer {expected}",
    )


def wait_started(daemon: DaemonProcess, port: int) -> None:
    """Until the daemon answers worker-0 (it has to start, list the Nodes and bind)."""
    try:
        wait_answer(port, "worker-0", ("NOERROR", ["10.240.0.101"]))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- daemon log ---\n{daemon.log_text()}") from None


def test_nodes_changed_through_the_api_are_answered_over_dns(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Add worker-1, move it to another address, delete it: each answered over DNS."""
    daemon, port = run_daemon(api, tmp_path)
    with daemon:
        wait_started(daemon, port)
        assert dig.dig(LOCAL, port, "worker-0") == ["10.240.0.101"]
        assert dig.dig(LOCAL, port, dig.reverse_name("10.240.0.101"), "PTR") == [
            "worker-0.node.internal."
        ]

        api.add_object("nodes", lab_node("worker-1", "10.240.0.102"))
        wait_answer(port, "worker-1.node.internal", ("NOERROR", ["10.240.0.102"]))

        api.modify_object("nodes", lab_node("worker-1", "10.240.0.150"))
        wait_answer(port, "worker-1.node.internal", ("NOERROR", ["10.240.0.150"]))

        api.delete_object("nodes", "worker-1")
        wait_answer(port, "worker-1.node.internal", ("NXDOMAIN", []))

        listening = daemon.events_named("dns_listening")
        assert [event["port"] for event in listening] == [port]


def test_the_daemon_runs_dns_on_uvloop(api: FakeApiServer, tmp_path: Path) -> None:
    """As installed (uvloop is a dependency on Linux), the DNS server runs on uvloop."""
    daemon, port = run_daemon(api, tmp_path)
    with daemon:
        wait_started(daemon, port)
        (listening,) = daemon.events_named("dns_listening")
        assert listening["loop"] == "uvloop"


def test_the_daemon_forwards_other_names_to_its_upstream(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """--upstream dnsmasq: upstream.example comes from dnsmasq, worker-0 still from us."""
    with Dnsmasq(args=["--host-record=upstream.example,192.0.2.7"]) as upstream:
        daemon, port = run_daemon(api, tmp_path, "--upstream", f"{LOCAL}:{upstream.port}")
        with daemon:
            wait_started(daemon, port)
            response = dig.query(LOCAL, port, "upstream.example")
            assert response.data() == ["192.0.2.7"]
            assert "ra" in response.flags
            assert "aa" in dig.query(LOCAL, port, "worker-0").flags


def test_the_zone_apex_names_come_from_the_config(api: FakeApiServer, tmp_path: Path) -> None:
    """dns.nameserver and dns.hostmaster become the apex NS and the SOA's MNAME and RNAME."""
    daemon, port = run_daemon(
        api,
        tmp_path,
        "--domain",
        "lab.internal",
        "--dns-nameserver",
        "lb-0.lab.internal",
        "--dns-hostmaster",
        "admin@example.org",
    )
    with daemon:
        wait_until(
            lambda: lookup(port, "worker-0.lab.internal"),
            until=lambda got: got == ("NOERROR", ["10.240.0.101"]),
            timeout=20,
            what="the daemon answering",
        )
        soa = dig.query(LOCAL, port, "lab.internal", "SOA").data("SOA")
        assert len(soa) == 1
        mname, rname = soa[0].split()[:2]
        assert (mname, rname) == ("lb-0.lab.internal.", "admin.example.org.")
        assert dig.query(LOCAL, port, "lab.internal", "NS").data("NS") == ["lb-0.lab.internal."]
        assert daemon.process.poll() is None
