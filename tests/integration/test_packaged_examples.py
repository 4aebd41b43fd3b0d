"""The configuration examples the package ships (/usr/share/doc/nodehosts/examples) work.

deploy/dnsmasq.conf runs in a real dnsmasq (its lines are dnsmasq's long options, given on
the command line here with the hosts directory moved to a temporary one) and serves a hosts
file written by nodehosts' own writer. The Corefile example is coredns/Corefile itself, taken
at build time (debian/nodehosts.examples); its tests are the CoreDNS ones.
"""

from __future__ import annotations

from pathlib import Path

from nodehosts.adapters.hostsfile import HostsFileWriter
from tests.helpers.dnsmasq import Dnsmasq

TOP = Path(__file__).resolve().parent.parent.parent
EXAMPLE = TOP / "deploy" / "dnsmasq.conf"
HOSTS = """\
# nodehosts generation 1
10.240.0.10 controller-0.node.internal controller-0
10.240.0.101 worker-0.node.internal worker-0
"""


def example_options(hostsdir: Path) -> list[str]:
    """The example's lines as dnsmasq long options, with our hosts directory."""
    options = []
    for raw in EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if key == "hostsdir":
            assert value == "/var/lib/nodehosts/hosts", "the example names the package's path"
            value = str(hostsdir)
        options.append(f"--{key}={value}")
    return options


def test_shipped_examples_are_listed_for_the_package() -> None:
    """The package installs coredns/Corefile and deploy/dnsmasq.conf as examples."""
    listed = (TOP / "debian" / "nodehosts.examples").read_text().split()
    assert listed == ["coredns/Corefile", "deploy/dnsmasq.conf"]
    assert all((TOP / path).is_file() for path in listed)


def test_dnsmasq_example_serves_nodehosts_hosts_file(tmp_path: Path) -> None:
    """Bare and qualified node names answer with TTL 30; other names in the domain NXDOMAIN."""
    hostsdir = tmp_path / "hosts"
    hostsdir.mkdir()
    writer = HostsFileWriter(hostsdir / "nodes.hosts")
    writer.write(HOSTS)
    with Dnsmasq(args=example_options(hostsdir)) as dnsmasq:
        for name in ("worker-0", "worker-0.node.internal"):
            response = dnsmasq.query(name)
            assert response.status == "NOERROR"
            assert response.data("A") == ["10.240.0.101"]
            assert {record.ttl for record in response.answer} == {30}
        assert dnsmasq.query("worker-9.node.internal").status == "NXDOMAIN"
        assert dnsmasq.dig("controller-0") == ["10.240.0.10"]
