"""The Debian package on booted Debian bookworm and trixie systems (systemd-nspawn).

For each suite: build the .deb once (tests/e2e/build-deb.sh: dpkg-buildpackage + lintian),
boot a throwaway overlay of a cached minimal root, `apt-get install ./nodehosts_*.deb` (the
dependencies come from the Debian archive), check the installed layout, the unit (verify,
security score, skipped until a kubeconfig exists), point it at a fake API server on the host's
loopback, `systemctl start nodehosts`, and check what an operator would: the service is active
with only CAP_NET_BIND_SERVICE, the hosts file appears and follows the API, `dig` against the
DNS listener answers node names, the journal has JSON lines, `nodehosts dump` works, stop leaves
the hosts file, `apt-get remove` keeps the conffile, `apt-get purge` leaves nothing behind.

Needs root, systemd-nspawn, debootstrap, the Debian archive (cached after the first run under
/var/cache/nodehosts-e2e) and the build tools (see tests/e2e/README.md). Run:

    python3 -m pytest -m e2e tests/e2e -v          # both suites
    NODEHOSTS_E2E_SUITES=trixie python3 -m pytest -m e2e tests/e2e -v
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nspawn import SYSTEM_PATH, Container, cached_root

from tests.helpers.helptext import help_commands, help_options
from tests.helpers.skips import skip_unless_ci

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent
SUITES = os.environ.get("NODEHOSTS_E2E_SUITES", "bookworm trixie").split()
TOKEN = "e2e-token-0123456789abcdef"
DOMAIN = "node.internal"
NODES = {
    "controller-0": "10.240.0.10",
    "worker-0": "10.240.0.101",
    "worker-1": "10.240.0.102",
    "worker-2": "10.240.0.150",
}
HOSTS_FILE = "/var/lib/nodehosts/hosts/nodes.hosts"
CONFIG = "/etc/nodehosts/config.toml"
# The DNS listener: port 53 (so CAP_NET_BIND_SERVICE is really needed) on a loopback address
# of its own, the first free one in this range (concurrent runs share the host's network).
DNS_ADDRESSES = [f"127.0.153.{i}" for i in range(1, 255)]
MAX_EXPOSURE = 2.0
CAP_NET_BIND_SERVICE = 1 << 10


# ---------------------------------------------------------------------------------- helpers


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25):  # type: ignore[no-untyped-def]
    """Poll PROBE until it returns something truthy; fail naming WHAT and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("systemd-nspawn", "nsenter", "debootstrap", "dpkg-buildpackage", "lintian"):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            missing.append(tool)
    return missing


def free_dns_address() -> str:
    start = os.getpid() % len(DNS_ADDRESSES)  # concurrent runs start their scans apart
    for address in DNS_ADDRESSES[start:] + DNS_ADDRESSES[:start]:
        if port_53_free(address):
            return address
    pytest.fail("no free port 53 on 127.0.153.0/24 for the DNS listener")


def port_53_free(address: str) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((address, 53))
            except OSError:
                return False
    return True


def parse_hosts(text: str) -> dict[str, str]:
    """name -> address for every name in a hosts-format text."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            for name in fields[1:]:
                out[name] = fields[0]
    return out


@dataclass
class Box:
    """One booted suite with the package installed, and what the tests learned on the way."""

    suite: str
    container: Container
    deb: Path
    api: Any
    timings: dict[str, float] = field(default_factory=dict)
    dns_address: str = ""

    def diagnostics(self) -> str:
        return self.container.diagnostics()

    def show(self, *props: str) -> dict[str, str]:
        result = self.container.run(
            "systemctl", "show", "nodehosts.service", *(f"--property={p}" for p in props)
        )
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    def hosts(self) -> dict[str, str]:
        path = self.container.path(HOSTS_FILE)
        return parse_hosts(path.read_text()) if path.is_file() else {}

    def dig(self, name: str, qtype: str = "A") -> subprocess.CompletedProcess[str]:
        return self.container.run(
            "dig", f"@{self.dns_address}", "-p", "53", "+tries=1", "+time=2", "+norecurse",
            name, qtype, check=False, timeout=15,
        )  # fmt: skip


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = prerequisites()
    if missing:
        skip_unless_ci(
            f"end-to-end test needs: {', '.join(missing)}",
            how="as root, scripts/system-deps then flock /tmp/nodehosts-e2e.lock "
            "python3 -m pytest -m e2e tests/e2e (tests/e2e/README.md)",
        )
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(HERE / "build-deb.sh"), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    print(result.stderr)
    assert result.returncode == 0, f"build-deb.sh failed:\n{result.stderr}"
    print(f"e2e: .deb built and linted in {time.monotonic() - started:.1f}s")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def api() -> Iterator[Any]:
    from nodehosts.testing.fake_apiserver import FakeApiServer, make_node

    server = FakeApiServer(tokens=[TOKEN], tls=True)
    for name, address in NODES.items():
        server.add_object("nodes", make_node(name, addresses=[address]))
    with server:
        yield server


@pytest.fixture(scope="module", params=SUITES)
def box(request: pytest.FixtureRequest, deb: Path, api: Any) -> Iterator[Box]:
    suite = request.param
    started = time.monotonic()
    root = cached_root(suite)
    timings = {"root": time.monotonic() - started}
    with Container(suite, root) as container:
        timings["boot"] = container.boot_seconds or 0.0
        box = Box(suite, container, deb, api, timings)
        t0 = time.monotonic()
        # apt downloads as _apt into partial/ (seeded from the cache by the host, as root).
        container.run("chown", "_apt:root", "/var/cache/apt/archives/partial", check=False)
        # A throwaway system: no fsync per unpacked file (halves the install time here).
        unsafe_io = container.path("/etc/dpkg/dpkg.cfg.d/e2e-unsafe-io")
        unsafe_io.write_text("force-unsafe-io\n")
        container.run("apt-get", "update", "-q", timeout=300)
        timings["apt-update"] = time.monotonic() - t0
        t0 = time.monotonic()
        shutil.copy2(deb, container.path("/root") / deb.name)
        install = container.run(
            "apt-get", "install", "-y", "-q", f"/root/{deb.name}",
            env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600,
        )  # fmt: skip
        box.install_log = install.stdout + install.stderr  # type: ignore[attr-defined]
        timings["install"] = time.monotonic() - t0
        yield box
        timings["total"] = time.monotonic() - started
        print(f"\ne2e {suite}: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


@pytest.fixture(scope="module")
def configured(box: Box) -> Box:
    """Kubeconfig for the fake API in place, the DNS listener on port 53."""
    c = box.container
    kubeconfig = c.path("/etc/nodehosts/kubeconfig")
    box.api.write_kubeconfig(kubeconfig, token=TOKEN)
    c.run("chown", "root:nodehosts", "/etc/nodehosts/kubeconfig")
    c.run("chmod", "0640", "/etc/nodehosts/kubeconfig")
    config = c.path(CONFIG)
    text = config.read_text()
    box.dns_address = free_dns_address()
    listen = f'listen = ["{box.dns_address}:53"]'
    text = re.sub(r"(?m)^listen = \[\]$", listen, text, count=1)
    assert listen in text, "the conffile's [dns] listen line moved"
    # Marks the conffile as changed by the admin: `remove` must keep it, `purge` delete it.
    text += "\n# e2e: edited by the administrator\n"
    config.write_text(text)
    # A short watchdog for the test, so that a daemon that stops pinging is caught within
    # seconds (the shipped WatchdogSec is checked separately).
    dropin = c.path("/etc/systemd/system/nodehosts.service.d/e2e.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    # NODEHOSTS_E2E_DROPIN: extra unit lines for debugging the harness (e.g. "Type=exec").
    extra = os.environ.get("NODEHOSTS_E2E_DROPIN", "").replace(";", "\n")
    dropin.write_text(f"[Service]\nWatchdogSec=3\n{extra}\n")
    c.run("systemctl", "daemon-reload")
    return box


@pytest.fixture(scope="module")
def started(configured: Box) -> Box:
    box = configured
    c = box.container
    t0 = time.monotonic()
    c.run("systemctl", "start", "--no-block", "nodehosts.service")

    def state() -> str | None:
        props = box.show("ActiveState", "SubState")
        if props["ActiveState"] in ("active", "failed") or props["SubState"] == "auto-restart":
            return f"{props['ActiveState']}/{props['SubState']}"
        return None

    deadline = time.monotonic() + 60
    while (result := state()) is None and time.monotonic() < deadline:
        time.sleep(0.25)
    if result is None:
        props = box.show("ActiveState", "SubState", "StatusText")
        pytest.fail(
            f"nodehosts.service still {props['ActiveState']}/{props['SubState']} after 60 s: "
            "Type=notify waits for READY=1 from the daemon (sd_notify)"
        )
    assert result == "active/running", f"nodehosts.service is {result}"
    box.timings["start"] = time.monotonic() - t0
    return box


# ---------------------------------------------------------------------------------- build


def source_files() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(TOP), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [name for name in listed.split("\0") if name and (TOP / name).exists()]


def deb_contents(path: Path) -> set[str]:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[5] for line in listing.splitlines()}


def test_builds_in_a_clean_bookworm(deb: Path) -> None:
    """Build-Depends are complete: `apt-get build-dep` + dpkg-buildpackage on a bare system
    give the same package as the build on this host."""
    with Container("bookworm", cached_root("bookworm")) as c:
        src = c.path("/root/src")
        for name in source_files():
            target = src / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TOP / name, target, follow_symlinks=False)
        unsafe_io = c.path("/etc/dpkg/dpkg.cfg.d/e2e-unsafe-io")
        unsafe_io.write_text("force-unsafe-io\n")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        c.run("chown", "_apt:root", "/var/cache/apt/archives/partial", check=False)
        c.run("apt-get", "update", "-q", timeout=300)
        c.run(
            "apt-get", "install", "-y", "-q", "--no-install-recommends",
            "build-essential", "dpkg-dev", env=env, timeout=600,
        )  # fmt: skip
        c.sh("cd /root/src && apt-get build-dep -y -q ./", env=env, timeout=600)
        c.sh("cd /root/src && dpkg-buildpackage -us -uc -b", timeout=600)
        built = c.path("/root") / deb.name
        assert built.is_file()
        assert deb_contents(built) == deb_contents(deb)


# What the package must ship, whatever the build did: a .deb that lost one of these fails here
# rather than making later tests skip or pass vacuously.
REQUIRED_FILES = {
    "/usr/bin/nodehosts",
    "/etc/nodehosts/config.toml",
    "/usr/share/man/man1/nodehosts.1.gz",
    "/usr/share/nodehosts/rbac.yaml",
    "/usr/share/nodehosts/rbac-csr.yaml",
    "/usr/lib/sysusers.d/nodehosts.conf",
    "/usr/lib/tmpfiles.d/nodehosts.conf",
    "/usr/share/doc/nodehosts/copyright",
}
REQUIRED_MODULES = {  # the daemon's parts, named so that a lost one is named in the failure
    "nodehosts/cli.py",
    "nodehosts/app/daemon.py",
    "nodehosts/adapters/dns_server.py",
    "nodehosts/adapters/upstream.py",
    "nodehosts/adapters/csr_approver.py",
    "nodehosts/adapters/kube/reflector.py",
    "nodehosts/adapters/hostsfile.py",
    "nodehosts/core/dns/answer.py",
    "nodehosts/core/csr.py",
}
DIST_PACKAGES = "/usr/lib/python3/dist-packages/"
UNIT_PATHS = ("/lib/systemd/system/nodehosts.service", "/usr/lib/systemd/system/nodehosts.service")


def test_the_package_ships_the_daemon_the_unit_the_man_page_and_the_rbac(deb: Path) -> None:
    """The .deb holds the entry point, the conffile, the unit, the man page, both RBAC files,
    sysusers/tmpfiles, the DNS server and CSR approver modules, and every module of the source
    tree (nodehosts/**/*.py)."""
    contents = {name.removeprefix(".") for name in deb_contents(deb)}
    missing = sorted(REQUIRED_FILES - contents)
    assert not missing, f"the package lacks {missing}"
    assert any(path in contents for path in UNIT_PATHS), f"no unit at {UNIT_PATHS}"
    source = {name for name in source_files() if re.fullmatch(r"nodehosts/.+[.]py", name)}
    assert source >= REQUIRED_MODULES, "REQUIRED_MODULES names a module the source lacks"
    missing = sorted(m for m in source | REQUIRED_MODULES if DIST_PACKAGES + m not in contents)
    assert not missing, f"the package lacks the modules {missing}"


# ---------------------------------------------------------------------------------- install


def test_installed_from_the_archive(box: Box) -> None:
    status = box.container.run("dpkg-query", "-W", "-f=${Status} ${Version}", "nodehosts")
    assert status.stdout.startswith("install ok installed")
    for dependency in ("python3-kubernetes", "python3-dnslib", "python3-structlog"):
        assert box.container.run("dpkg-query", "-W", dependency, check=False).returncode == 0
    python = box.container.run("python3", "--version").stdout.strip()
    kube = box.container.run("dpkg-query", "-W", "-f=${Version}", "python3-kubernetes").stdout
    print(f"{box.suite}: {python}, python3-kubernetes {kube}")


def test_layout(box: Box) -> None:
    c = box.container
    for path in (
        "/usr/bin/nodehosts",
        CONFIG,
        "/usr/share/nodehosts/rbac.yaml",
        "/usr/share/man/man1/nodehosts.1.gz",
        "/usr/lib/sysusers.d/nodehosts.conf",
        "/usr/lib/tmpfiles.d/nodehosts.conf",
        "/usr/share/doc/nodehosts/copyright",
    ):
        assert c.path(path).exists(), f"{path} missing"
    conffiles = c.run("dpkg-query", "-W", "-f=${Conffiles}", "nodehosts").stdout
    assert CONFIG in conffiles
    passwd = c.run("getent", "passwd", "nodehosts").stdout.strip().split(":")
    assert int(passwd[2]) < 1000, "nodehosts is a system user"
    assert passwd[5] == "/var/lib/nodehosts"
    assert passwd[6] in ("/usr/sbin/nologin", "/sbin/nologin")
    for directory in ("/var/lib/nodehosts", "/var/lib/nodehosts/hosts"):
        stat = c.run("stat", "-c", "%U:%G %a", directory).stdout.split()
        assert stat == ["nodehosts:nodehosts", "755"], f"{directory}: {stat}"
    version = c.run("nodehosts", "--version").stdout
    assert version.startswith("nodehosts ")


def test_man_page(box: Box) -> None:
    """`man nodehosts` in the booted system lists every command and option that the installed
    /usr/bin/nodehosts shows in its own --help output."""
    c = box.container
    page = c.run("man", "-P", "cat", "nodehosts", env={"MANWIDTH": "250"}).stdout
    # Plain text: no overstrike (bold/underline), ASCII hyphens and spaces.
    page = re.sub(r".\x08", "", page).replace("\u2010", "-").replace("\u2212", "-")
    page = page.replace("\u00a0", " ")
    assert "/etc/nodehosts/config.toml" in page
    top = c.run("nodehosts", "--help").stdout
    commands = help_commands(top)
    assert {"run", "dump", "check-config"} <= set(commands)
    missing = [f"nodehosts {option}" for option in help_options(top) if option not in page]
    for command in commands:
        assert f"nodehosts {command}" in page, f"no section for nodehosts {command}"
        options = help_options(c.run("nodehosts", command, "--help").stdout)
        missing += [f"nodehosts {command} {o}" for o in sorted(options) if o not in page]
    assert not missing, f"in --help but not in man nodehosts: {missing}"


def test_unit_verifies_clean(box: Box) -> None:
    unit = box.container.run("systemctl", "show", "-P", "FragmentPath", "nodehosts").stdout.strip()
    result = box.container.run("systemd-analyze", "verify", unit, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not output, f"systemd-analyze verify {unit}:\n{output}"


def test_unit_exposure_at_most_2(box: Box) -> None:
    result = box.container.run("systemd-analyze", "security", "--no-pager", "nodehosts.service")
    match = re.search(r"Overall exposure level for nodehosts\.service: ([\d.]+)", result.stdout)
    assert match, result.stdout[-500:]
    exposure = float(match.group(1))
    print(f"{box.suite}: systemd-analyze security exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


def test_skipped_until_a_kubeconfig_exists(box: Box) -> None:
    c = box.container
    assert c.run("systemctl", "is-enabled", "nodehosts.service").stdout.strip() == "enabled"
    props = box.show("ActiveState", "ConditionResult", "NRestarts")
    # postinst started it; the condition kept it from running, without a failure.
    assert props["ActiveState"] == "inactive"
    assert props["ConditionResult"] == "no"
    unit = c.run("systemctl", "cat", "nodehosts.service").stdout
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "User=nodehosts"):
        assert re.search(rf"(?m)^{line}$", unit), f"the shipped unit lacks {line}"
    # And without the unit's condition, the daemon itself says what is missing.
    result = c.run("nodehosts", "check-config", "--config", CONFIG, check=False)
    assert result.returncode == 2
    assert "kubernetes.kubeconfig" in result.stderr


CSR_SNIPPET = """
import ipaddress
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import nodehosts.core.csr

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "system:node:worker-0")])
san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("10.240.0.101"))])
csr = (
    x509.CertificateSigningRequestBuilder().subject_name(name).add_extension(san, critical=False)
    .sign(key, hashes.SHA256())
)
loaded = x509.load_pem_x509_csr(csr.public_bytes(serialization.Encoding.PEM))
assert loaded.is_signature_valid
print("csr ok")
"""


def test_csr_crypto_works_in_the_unit_sandbox(box: Box) -> None:
    """The CSR approver's libraries (cryptography, via cffi/OpenSSL) under the unit's own
    sandbox (MemoryDenyWriteExecute, seccomp, ...): a Python snippet run by systemd-run with
    every [Service] setting of the installed unit but Exec*/Type/Restart*/Watchdog*."""
    c = box.container
    unit = c.run("systemctl", "cat", "nodehosts.service").stdout
    skip = re.compile(r"^(Type|NotifyAccess|Exec\w+|Watchdog\w*|Restart\w*)=")
    properties, in_service = [], False
    for line in unit.splitlines():
        if line.startswith("["):
            in_service = line.strip() == "[Service]"
        elif in_service and re.match(r"^[A-Z]\w*=", line) and not skip.match(line):
            properties += ["-p", line]
    script = c.path("/usr/local/share/nodehosts-e2e-csr.py")
    script.write_text(CSR_SNIPPET)
    script.chmod(0o644)
    result = c.run(
        "systemd-run", "--quiet", "--wait", "--pipe", *properties,
        "/usr/bin/python3", "/usr/local/share/nodehosts-e2e-csr.py", check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and "csr ok" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------- running


def test_check_config_as_the_service_user(configured: Box) -> None:
    result = configured.container.run(
        "runuser", "-u", "nodehosts", "--", "nodehosts", "check-config", "--config", CONFIG
    )
    assert "config ok" in result.stdout


def test_service_active_with_only_net_bind_service(started: Box) -> None:
    c = started.container
    props = started.show("MainPID", "ActiveState", "SubState", "User")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running")
    # MainPID is a pid of the container's namespace: read its status from inside.
    text = c.run("cat", f"/proc/{props['MainPID']}/status").stdout
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    uid = fields["Uid"].split()[0]
    assert c.run("getent", "passwd", uid).stdout.startswith("nodehosts:")
    assert int(fields["CapEff"], 16) == CAP_NET_BIND_SERVICE
    assert int(fields["CapBnd"], 16) == CAP_NET_BIND_SERVICE
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"


def test_hosts_file_published(started: Box) -> None:
    hosts = wait_for(
        "the hosts file with every node",
        lambda: (h := started.hosts()) and all(n in h for n in NODES) and h,
    )
    for name, address in NODES.items():
        assert hosts[name] == address
        assert hosts[f"{name}.{DOMAIN}"] == address
    out = started.container.run("stat", "-c", "%U %a", HOSTS_FILE).stdout.split()
    assert out == ["nodehosts", "644"], "readable by CoreDNS, written by nodehosts"


def test_dig_answers_node_names(started: Box) -> None:
    def answer(name: str) -> str:
        result = started.dig(name)
        return result.stdout if "status: NOERROR" in result.stdout else ""

    for name, address in NODES.items():
        for query in (f"{name}.{DOMAIN}", name):
            out = wait_for(f"dig {query}", lambda q=query: answer(q), timeout=20)
            records = re.findall(rf"^{re.escape(query)}\.\s+\d+\s+IN\s+A\s+(\S+)$", out, re.M)
            assert records == [address], out
    missing = started.dig(f"no-such-node.{DOMAIN}")
    assert "status: NXDOMAIN" in missing.stdout, missing.stdout


def test_follows_the_api(started: Box) -> None:
    from nodehosts.testing.fake_apiserver import make_node

    api = started.api
    api.add_object("nodes", make_node("worker-9", addresses=["10.240.0.199"]))
    wait_for(
        "worker-9 in the hosts file", lambda: started.hosts().get("worker-9") == "10.240.0.199"
    )
    wait_for("dig worker-9", lambda: "10.240.0.199" in started.dig(f"worker-9.{DOMAIN}").stdout)
    api.delete_object("nodes", "worker-9")
    wait_for("worker-9 gone from the hosts file", lambda: "worker-9" not in started.hosts())
    assert all(name in started.hosts() for name in NODES)


def test_journal_lines_are_json(started: Box) -> None:
    result = started.container.run(
        "journalctl", "_SYSTEMD_UNIT=nodehosts.service", "-o", "json", "--no-pager"
    )
    messages = []
    for line in result.stdout.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald's byte-array form of a non-UTF-8 message
            message = bytes(message).decode(errors="replace")
        messages.append(message)
    assert messages, "no journal lines from nodehosts"
    not_json = []
    for message in messages:
        try:
            event = json.loads(message)
        except ValueError:
            not_json.append(message)
            continue
        assert isinstance(event, dict) and "event" in event and "level" in event, message
    assert not not_json, "unstructured lines in the journal:\n" + "\n".join(not_json[:20])
    print(f"{started.suite}: {len(messages)} JSON journal lines, e.g. {messages[0]}")


def test_dump_inside(started: Box) -> None:
    c = started.container
    hosts = c.run("runuser", "-u", "nodehosts", "--", "nodehosts", "dump", "--config", CONFIG)
    dumped = parse_hosts(hosts.stdout)
    for name, address in NODES.items():
        assert dumped.get(name) == address, hosts.stdout
    report = c.run(
        "runuser", "-u", "nodehosts", "--",
        "nodehosts", "dump", "--config", CONFIG, "--format", "json",
    )  # fmt: skip
    assert json.loads(report.stdout)


def test_memory_within_budget(started: Box) -> None:
    props = started.show("MainPID", "MemoryMax", "MemoryCurrent")
    assert props["MemoryMax"] == str(200 * 1024 * 1024)
    status = started.container.run("cat", f"/proc/{props['MainPID']}/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmHWM"].split()[0])
    # MemoryCurrent is "[not set]" where the container has no memory controller (cgroup v1
    # hosts): the peak RSS is what is measured everywhere.
    print(
        f"{started.suite}: peak RSS {rss_kib // 1024} MiB, threads {fields['Threads'].strip()}, "
        f"MemoryCurrent={props['MemoryCurrent']}"
    )
    assert rss_kib * 1024 < 200 * 1024 * 1024


def test_watchdog_pings_and_no_restarts(started: Box) -> None:
    # The e2e drop-in sets WatchdogSec=3: a daemon that stops pinging is killed within 3 s.
    pid = started.show("MainPID")["MainPID"]
    time.sleep(7)
    props = started.show("MainPID", "ActiveState", "NRestarts", "WatchdogUSec")
    assert props["WatchdogUSec"] == "3s"
    assert (props["ActiveState"], props["MainPID"], props["NRestarts"]) == ("active", pid, "0")


def test_reload_keeps_it_running(started: Box) -> None:
    c = started.container
    pid = started.show("MainPID")["MainPID"]
    c.run("systemctl", "reload", "nodehosts.service")
    time.sleep(2)
    props = started.show("MainPID", "ActiveState", "NRestarts")
    assert (props["ActiveState"], props["MainPID"], props["NRestarts"]) == ("active", pid, "0"), (
        "`systemctl reload` (ExecReload=: SIGHUP) must leave the daemon running"
    )


def test_stop_keeps_the_hosts_file(started: Box) -> None:
    c = started.container
    c.run("systemctl", "stop", "nodehosts.service", timeout=60)
    props = started.show("ActiveState", "Result")
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success")
    assert all(name in started.hosts() for name in NODES), "stop must not remove the hosts file"


# ---------------------------------------------------------------------------------- removal


def test_remove_keeps_the_config(configured: Box) -> None:
    c = configured.container
    c.run("apt-get", "remove", "-y", "-q", "nodehosts", env={"DEBIAN_FRONTEND": "noninteractive"})
    status = c.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "nodehosts").stdout.strip()
    assert status == "rc"
    assert "edited by the administrator" in c.path(CONFIG).read_text()
    assert not c.path("/usr/bin/nodehosts").exists()
    assert c.run("systemctl", "cat", "nodehosts.service", check=False).returncode != 0


def test_purge_leaves_nothing(configured: Box) -> None:
    c = configured.container
    c.run("apt-get", "purge", "-y", "-q", "nodehosts", env={"DEBIAN_FRONTEND": "noninteractive"})
    status = c.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "nodehosts", check=False)
    assert status.returncode != 0 or status.stdout.strip() in ("", "un", "pn")
    for path in ("/var/lib/nodehosts", CONFIG, "/run/nodehosts"):
        assert not c.path(path).exists(), f"{path} left after purge"
    wants = c.path("/etc/systemd/system/multi-user.target.wants/nodehosts.service")
    assert not wants.is_symlink(), "enablement symlink left after purge"
    assert c.run("getent", "passwd", "nodehosts", check=False).returncode == 2
    assert c.run("getent", "group", "nodehosts", check=False).returncode == 2
    # The administrator's kubeconfig (not the package's) is all that is left in /etc/nodehosts.
    left = sorted(p.name for p in c.path("/etc/nodehosts").iterdir())
    assert left == ["kubeconfig"], left
