"""`nodehosts run --dns-listen`: Nodes changed through the (fake) API are answered over DNS.

The real CLI process, the real kubernetes client against the fake API server, queried with
dig and dnspython on loopback; forwarding to a real dnsmasq.
"""

from __future__ import annotations

import time
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
from tests.helpers.daemon import Daemon, start_daemon
from tests.helpers.dnsmasq import Dnsmasq
from tests.helpers.net import free_port
from tests.helpers.polling import wait_until

TOKEN = "test-token"
LOCAL = "127.0.0.1"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101")) as server:
        yield server


def run_daemon(api: FakeApiServer, tmp_path: Path, port: int, *extra: str) -> Daemon:
    """The daemon answering DNS on `port` (and publishing no hosts file)."""
    return start_daemon(api, tmp_path, "--dns-listen", f"{LOCAL}:{port}", *extra, token=TOKEN)


def lookup(port: int, name: str) -> tuple[str, list[str]]:
    """(rcode name, addresses) with dnspython over UDP; ("TIMEOUT", []) if nothing came back."""
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), LOCAL, port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return "TIMEOUT", []
    addresses = sorted(rd.to_text() for rrset in reply.answer for rd in rrset)
    return dns.rcode.to_text(reply.rcode()), addresses


def seconds_until(port: int, name: str, expected: tuple[str, list[str]], *, limit: float) -> float:
    """Poll every 10 ms until `name` answers `expected`; the seconds that took."""
    started = time.monotonic()
    wait_until(
        lambda: lookup(port, name),
        until=lambda got: got == expected,
        timeout=limit,
        interval=0.01,
        what=f"{name} to answer {expected}",
    )
    return time.monotonic() - started


def wait_started(daemon: Daemon, port: int) -> None:
    """Until the daemon answers worker-0 (it has to start, list the Nodes and bind)."""
    try:
        seconds_until(port, "worker-0", ("NOERROR", ["10.240.0.101"]), limit=20.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- daemon log ---\n{daemon.log_text()}") from None


def test_nodes_changed_through_the_api_are_answered_over_dns_within_a_second(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Add worker-1, move it to another address, delete it: each visible over DNS in < 1 s."""
    port = free_port(LOCAL)
    with run_daemon(api, tmp_path, port) as daemon:
        wait_started(daemon, port)
        assert dig.dig(LOCAL, port, "worker-0") == ["10.240.0.101"]
        assert dig.dig(LOCAL, port, dig.reverse_name("10.240.0.101"), "PTR") == [
            "worker-0.node.internal."
        ]

        api.add_object("nodes", lab_node("worker-1", "10.240.0.102"))
        added = seconds_until(
            port, "worker-1.node.internal", ("NOERROR", ["10.240.0.102"]), limit=1.0
        )

        api.modify_object("nodes", lab_node("worker-1", "10.240.0.150"))
        moved = seconds_until(
            port, "worker-1.node.internal", ("NOERROR", ["10.240.0.150"]), limit=1.0
        )

        api.delete_object("nodes", "worker-1")
        deleted = seconds_until(port, "worker-1.node.internal", ("NXDOMAIN", []), limit=1.0)
        assert max(added, moved, deleted) < 1.0

        listening = daemon.events_named("dns_listening")
        assert [event["port"] for event in listening] == [port]


def test_the_daemon_runs_dns_on_uvloop(api: FakeApiServer, tmp_path: Path) -> None:
    """As installed (uvloop is a dependency on Linux), the DNS server runs on uvloop."""
    port = free_port(LOCAL)
    with run_daemon(api, tmp_path, port) as daemon:
        wait_started(daemon, port)
        (listening,) = daemon.events_named("dns_listening")
        assert listening["loop"] == "uvloop"


def test_the_daemon_forwards_other_names_to_its_upstream(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """--upstream dnsmasq: upstream.example comes from dnsmasq, worker-0 still from us."""
    with Dnsmasq(args=["--host-record=upstream.example,192.0.2.7"]) as upstream:
        port = free_port(LOCAL)
        with run_daemon(api, tmp_path, port, "--upstream", f"{LOCAL}:{upstream.port}") as daemon:
            wait_started(daemon, port)
            response = dig.query(LOCAL, port, "upstream.example")
            assert response.data() == ["192.0.2.7"]
            assert "ra" in response.flags
            assert "aa" in dig.query(LOCAL, port, "worker-0").flags


def test_the_zone_apex_names_come_from_the_config(api: FakeApiServer, tmp_path: Path) -> None:
    """dns.nameserver and dns.hostmaster become the apex NS and the SOA's MNAME and RNAME."""
    port = free_port(LOCAL)
    with run_daemon(
        api,
        tmp_path,
        port,
        "--domain",
        "lab.internal",
        "--dns-nameserver",
        "lb-0.lab.internal",
        "--dns-hostmaster",
        "admin@example.org",
    ) as daemon:
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
