"""A real consumer of the hosts file: dnsmasq --hostsdir on a loopback port, queried with dig.

dnsmasq watches the directory with inotify and re-reads a file that is renamed into place, the
way HostsFileWriter publishes. These tests show every kind of change a cluster makes (a node
joins, its DHCP address changes, it leaves) reaching DNS answers, and that the writer's temp file
is never read as records. Removal of records that vanished from a file needs dnsmasq >= 2.88
(Debian bookworm ships 2.89, later updated to 2.90).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from nodehosts.adapters.hostsfile import HostsFileWriter
from tests.helpers.dig import reverse_name
from tests.helpers.dnsmasq import Dnsmasq, dnsmasq_version
from tests.helpers.skips import skip_unless_ci

DOMAIN = "node.internal"


def hosts_text(generation: int, nodes: Mapping[str, Sequence[str]]) -> str:
    """A hosts file shaped like nodehosts' own: header, canonical FQDN first, one address a line."""
    lines = [f"# nodehosts generation {generation}"]
    for name in sorted(nodes):
        lines.extend(f"{address} {name}.{DOMAIN} {name}" for address in nodes[name])
    return "\n".join(lines) + "\n"


@pytest.fixture
def hosts_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hosts.d"
    directory.mkdir()
    return directory


@pytest.fixture
def writer(hosts_dir: Path) -> HostsFileWriter:
    return HostsFileWriter(hosts_dir / "hosts")


@pytest.fixture
def dnsmasq(hosts_dir: Path) -> Iterator[Dnsmasq]:
    with Dnsmasq(hostsdir=hosts_dir) as server:
        yield server


def needs_record_removal() -> None:
    if dnsmasq_version() < (2, 88):
        skip_unless_ci(
            "dnsmasq < 2.88 keeps records that vanished from a hosts file",
            how="install dnsmasq >= 2.88 (Debian bookworm has 2.89)",
        )


def reads_of(server: Dnsmasq, path: Path) -> int:
    """How many times dnsmasq has (re-)read `path`, from its log."""
    return len(re.findall(rf"read {re.escape(str(path))} - \d+ names", server.log()))


def test_dnsmasq_serves_a_file_written_after_it_started(
    dnsmasq: Dnsmasq, writer: HostsFileWriter
) -> None:
    """The first publication appears in the empty directory: A, AAAA, bare name and PTR."""
    writer.write(
        hosts_text(1, {"worker-0": ["10.240.0.101", "fd00:10:240::101"], "lb-0": ["10.240.0.40"]})
    )
    dnsmasq.wait_for_answer(f"worker-0.{DOMAIN}", "A", ["10.240.0.101"])
    assert dnsmasq.dig(f"worker-0.{DOMAIN}", "AAAA") == ["fd00:10:240::101"]
    assert dnsmasq.dig("worker-0", "A") == ["10.240.0.101"]
    assert dnsmasq.dig(f"lb-0.{DOMAIN}", "A") == ["10.240.0.40"]
    assert dnsmasq.dig(reverse_name("10.240.0.101"), "PTR") == [f"worker-0.{DOMAIN}."]


def test_dnsmasq_serves_the_file_that_was_there_when_it_started(
    hosts_dir: Path, writer: HostsFileWriter
) -> None:
    """A restarted consumer picks up the last generation from disk."""
    writer.write(hosts_text(7, {"controller-0": ["10.240.0.10"]}))
    with Dnsmasq(hostsdir=hosts_dir) as server:
        assert server.dig(f"controller-0.{DOMAIN}") == ["10.240.0.10"]


def test_a_dhcp_address_change_is_served_and_the_old_address_is_gone(
    dnsmasq: Dnsmasq, writer: HostsFileWriter
) -> None:
    """Same name, new address, same file size: the new address replaces the old one."""
    needs_record_removal()
    name = f"worker-1.{DOMAIN}"
    writer.write(hosts_text(1, {"worker-1": ["10.240.0.101"]}))
    dnsmasq.wait_for_answer(name, "A", ["10.240.0.101"])

    writer.write(hosts_text(2, {"worker-1": ["10.240.0.150"]}))
    dnsmasq.wait_for_answer(name, "A", ["10.240.0.150"])
    assert dnsmasq.dig("worker-1") == ["10.240.0.150"]
    assert dnsmasq.dig(reverse_name("10.240.0.150"), "PTR") == [f"{name}."]
    assert dnsmasq.query(reverse_name("10.240.0.101"), "PTR").answer == ()


def test_a_removed_node_stops_being_served(dnsmasq: Dnsmasq, writer: HostsFileWriter) -> None:
    """A deleted Node's names and its PTR disappear; the other nodes stay."""
    needs_record_removal()
    writer.write(hosts_text(1, {"worker-1": ["10.240.0.101"], "worker-2": ["10.240.0.102"]}))
    dnsmasq.wait_for_answer(f"worker-2.{DOMAIN}", "A", ["10.240.0.102"])

    writer.write(hosts_text(2, {"worker-1": ["10.240.0.101"]}))
    dnsmasq.wait_for_answer(f"worker-2.{DOMAIN}", "A", [])
    assert dnsmasq.dig("worker-2") == []
    assert dnsmasq.dig(reverse_name("10.240.0.102"), "PTR") == []
    assert dnsmasq.dig(f"worker-1.{DOMAIN}") == ["10.240.0.101"]


def test_an_added_node_is_served(dnsmasq: Dnsmasq, writer: HostsFileWriter) -> None:
    writer.write(hosts_text(1, {"worker-1": ["10.240.0.101"]}))
    dnsmasq.wait_for_answer(f"worker-1.{DOMAIN}", "A", ["10.240.0.101"])

    writer.write(hosts_text(2, {"worker-1": ["10.240.0.101"], "worker-3": ["10.240.0.103"]}))
    dnsmasq.wait_for_answer(f"worker-3.{DOMAIN}", "A", ["10.240.0.103"])
    assert dnsmasq.dig("worker-3") == ["10.240.0.103"]
    assert dnsmasq.dig(f"worker-1.{DOMAIN}") == ["10.240.0.101"]


def test_after_a_burst_of_changes_the_last_one_is_served(
    dnsmasq: Dnsmasq, writer: HostsFileWriter
) -> None:
    """Twenty rewrites in a row, faster than anyone queries: the consumer ends on the last."""
    needs_record_removal()
    for generation in range(1, 21):
        writer.write(hosts_text(generation, {"worker-9": [f"10.240.0.{100 + generation}"]}))
    dnsmasq.wait_for_answer(f"worker-9.{DOMAIN}", "A", ["10.240.0.120"])


def test_the_temp_file_is_never_read_as_records(
    dnsmasq: Dnsmasq, writer: HostsFileWriter, hosts_dir: Path
) -> None:
    """A `.hosts.tmp` (here one a crash left behind) is invisible to dnsmasq, before and after."""
    (hosts_dir / ".hosts.tmp").write_text("10.66.66.66 ghost.node.internal ghost\n")
    for generation in range(1, 6):
        writer.write(hosts_text(generation, {"worker-1": [f"10.240.0.{100 + generation}"]}))
    dnsmasq.wait_for_answer(f"worker-1.{DOMAIN}", "A", ["10.240.0.105"])
    assert dnsmasq.dig(f"ghost.{DOMAIN}") == []
    assert dnsmasq.dig(reverse_name("10.66.66.66"), "PTR") == []
    # Nor did dnsmasq ever read any file but the target (the writer's own temp files included).
    assert set(re.findall(r"read (\S+) - \d+ names", dnsmasq.log())) == {str(writer.path)}


def test_an_identical_write_does_not_make_dnsmasq_reread_the_file(
    dnsmasq: Dnsmasq, writer: HostsFileWriter, hosts_dir: Path
) -> None:
    """A heartbeat renders the same text: the consumer is not woken at all."""
    text = hosts_text(1, {"worker-1": ["10.240.0.101"]})
    writer.write(text)
    dnsmasq.wait_for_answer(f"worker-1.{DOMAIN}", "A", ["10.240.0.101"])
    reads = reads_of(dnsmasq, writer.path)

    assert writer.write(text) is False
    # inotify events arrive in order: once a later file in the same directory is served, any
    # event the identical write could have caused has been handled.
    HostsFileWriter(hosts_dir / "marker").write("10.240.0.250 marker.node.internal\n")
    dnsmasq.wait_for_answer(f"marker.{DOMAIN}", "A", ["10.240.0.250"])
    assert reads_of(dnsmasq, writer.path) == reads
