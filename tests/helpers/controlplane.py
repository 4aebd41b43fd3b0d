"""The lab's control plane as plain processes on 127.0.0.1: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, built by scripts/upstream-bin.

Contract:
- `render_lab(outdir)` runs `provisioning/render.sh OUTDIR` (the lab's PKI, kubeconfigs and
  static pod manifests) and returns OUTDIR.
- `ControlPlane(rendered, workdir)` reads controller-0's manifests from the rendered tree,
  parses each container's `command:` list and runs exactly those flags with the rewrites below;
  `.start()` waits for the apiserver's `/readyz?verbose` (admin client certificate) and the
  controller-manager's and scheduler's `/healthz`. On failure it raises with every
  component's last 50 log lines. `.stop()` kills everything; `.restart(name)` stops one
  component and starts it again with the same flags (etcd keeps its data directory). While
  waiting, a controller-manager or scheduler that exited (they exit when they lose their
  leader lease during an apiserver or etcd restart) is started again, as the kubelet would.
- `.admin` is an `Api` with the lab's admin certificate (O=system:masters); `.client_for(cn,
  orgs)` issues a client certificate from the lab CA (e.g. `system:node:NAME`/`system:nodes`)
  and returns an `Api` with it; `.token_client(token)` one with a bearer token.
- `.kubeconfig(name)` is the lab's rendered `kubeconfigs/NAME.kubeconfig` with its server
  rewritten to this apiserver; `.kubectl(*args)` and `.etcdctl(*args)` run the real binaries.

Rewrite rules (everything else in the manifests is passed through unchanged; `flag_names`
checks that the flag set is the manifest's plus the additions named here):
- Paths: a value under `/etc/kubernetes/` is the same file in the rendered controller-0 tree,
  except `*.kubeconfig`, which is the rendered kubeconfig with `server:` pointing at this
  apiserver (the lab's point at 127.0.0.1:6443 or the LB VIP); `/var/lib/etcd` is `workdir/etcd`.
- Addresses and ports: every URL or address of the node (10.240.0.x) or 127.0.0.1 becomes
  127.0.0.1 with a random free port per listener: etcd's client, peer and metrics URLs, the
  apiserver's `--secure-port` and `--etcd-servers` (a port another process takes before it is
  bound: `.start()` starts everything again on new ports, with a fresh etcd). The apiserver's
  `--advertise-address` (10.240.0.10) is kept: it is only written into the `kubernetes`
  Endpoints, which refuse a loopback address, and nothing here dials it.
- etcd `--initial-cluster` names only controller-0 (at its rewritten peer URL): the lab's three
  members cannot reach quorum with one process. `--initial-cluster-state=new` and the token stay.
- Added: kube-apiserver `--bind-address=127.0.0.1` (the lab binds every address of its VM; tests
  listen on loopback only); kube-controller-manager and kube-scheduler `--secure-port=PORT` (the
  lab uses the fixed defaults 10257/10259, which another process on this host may hold).
- Nothing is dropped. The apiserver serving certificate the lab issues lists IP:127.0.0.1
  (pki.sh apiserver_sans) and etcd's lists 127.0.0.1, so the lab's own certificates are used.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.upstream import REPO, upstream_binary

__all__ = ["Api", "ApiResponse", "ControlPlane", "free_port", "render_lab"]

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
LAB_NODE_IP = re.compile(r"\b10\.240\.0\.\d+\b")
# Written into the `kubernetes` Endpoints, never dialled by the tests; the apiserver refuses a
# loopback address there ("may not be in the loopback range"), so the lab's is kept.
KEPT_LAB_ADDRESSES = ("--advertise-address",)
RESPAWNED = ("kube-controller-manager", "kube-scheduler")
READY_TIMEOUT = 180.0  # two shared cores: a cold apiserver takes a while
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_lab(outdir: Path) -> Path:
    subprocess.run(
        ["bash", str(REPO / "provisioning" / "render.sh"), str(outdir)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return outdir


def manifest_command(path: Path) -> list[str]:
    """The `command:` list of the only container of a rendered static pod manifest."""
    pod = yaml.safe_load(path.read_text())
    (container,) = pod["spec"]["containers"]
    return [str(arg) for arg in container["command"]]


def split_flags(args: Sequence[str]) -> list[tuple[str, str]]:
    """`--name=value` arguments as (name, value) pairs; the manifests use no other form."""
    flags = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if not name.startswith("--") or not sep:
            raise ValueError(f"unexpected argument form in a manifest: {arg!r}")
        flags.append((name, value))
    return flags


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any  # decoded JSON, or the text when it is not JSON

    def ok(self) -> Any:
        if not 200 <= self.status < 300:
            raise AssertionError(f"HTTP {self.status}: {self.body}")
        return self.body


class Api:
    """A plain HTTPS client of the apiserver (urllib3, as the official client uses)."""

    def __init__(
        self,
        base: str,
        ca: Path | None = None,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        token: str | None = None,
    ) -> None:
        self.base = base
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._pool = urllib3.PoolManager(
            maxsize=16,
            cert_reqs="CERT_REQUIRED" if ca else "CERT_NONE",
            ca_certs=str(ca) if ca else None,
            cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None,
            retries=False,
            timeout=urllib3.Timeout(connect=5, read=60),
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> ApiResponse:
        url = self.base + path
        if query:
            url += "?" + urlencode(query)
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        response = self._pool.request(method, url, body=data, headers=headers)
        text = response.data.decode(errors="replace")
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = text
        return ApiResponse(response.status, decoded)

    def get(self, path: str, **query: str) -> ApiResponse:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any) -> ApiResponse:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> ApiResponse:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any) -> ApiResponse:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, **query: str) -> ApiResponse:
        return self.request("DELETE", path, query=query)

    def watch(self, path: str, *, read_timeout: float = 30, **query: str) -> Iterator[Any]:
        """The decoded events of one watch, until the server ends it. HTTP errors raise
        AssertionError with the status (so a test sees whether a 410 came as HTTP or event)."""
        url = self.base + path + "?" + urlencode({**query, "watch": "true"})
        response = self._pool.request(
            "GET",
            url,
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=read_timeout),
        )
        try:
            if response.status != 200:
                raise AssertionError(f"HTTP {response.status}: {response.read().decode()}")
            pending = b""
            for chunk in response.stream(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    def create_many(self, path: str, bodies: Sequence[Any], *, workers: int = 12) -> None:
        """POST every body concurrently; every one must be created."""
        with ThreadPoolExecutor(workers) as pool:
            for response in pool.map(lambda body: self.post(path, body), bodies):
                response.ok()


def issue_client_cert(
    ca_dir: Path, out_dir: Path, name: str, common_name: str, organizations: Sequence[str] = ()
) -> tuple[Path, Path]:
    """A client certificate from the lab CA (ca.crt/ca.key in `ca_dir`), written to out_dir."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    crt_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return crt_path, key_path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler with the lab's flags."""

    def __init__(self, rendered: Path, workdir: Path) -> None:
        self.rendered = rendered
        self.workdir = workdir
        self.node_root = rendered / "nodes" / "controller-0"
        self.pki = self.node_root / "etc" / "kubernetes" / "pki"
        self.manifests = {
            name: manifest_command(self.node_root / f"etc/kubernetes/manifests/{name}.yaml")
            for name in COMPONENTS
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._assign_ports()

    def _assign_ports(self) -> None:
        """Free ports for every listener, and what names them: URLs, commands, kubeconfigs."""
        self.ports = {
            "etcd-client": free_port(),
            "etcd-peer": free_port(),
            "etcd-metrics": free_port(),
            "apiserver": free_port(),
            "controller-manager": free_port(),
            "scheduler": free_port(),
        }
        self.api_url = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.etcd_url = f"https://127.0.0.1:{self.ports['etcd-client']}"
        # Kubeconfigs name the apiserver's URL; `_rewrite` writes them again.
        shutil.rmtree(self.workdir / "kubeconfigs", ignore_errors=True)
        self.commands = {name: self._rewrite(name, args) for name, args in self.manifests.items()}
        lab_pki = self.rendered / "pki"  # the host's copy: the admin's certificate lives only here
        self.admin = Api(
            self.api_url,
            self.pki / "ca.crt",
            cert=lab_pki / "admin.crt",
            key=lab_pki / "admin.key",
        )

    # ------------------------------------------------------------------ the command lines

    def _path(self, value: str) -> str:
        if value.startswith("/etc/kubernetes/") and value.endswith(".kubeconfig"):
            return str(self.kubeconfig(Path(value).stem))
        if value.startswith("/etc/kubernetes/"):
            return str(self.node_root / value.lstrip("/"))
        if value == "/var/lib/etcd":
            return str(self.workdir / "etcd")
        return value

    def _rewrite(self, component: str, manifest: Sequence[str]) -> list[str]:
        binary, *args = manifest
        ports = self.ports
        etcd_peer = f"https://127.0.0.1:{ports['etcd-peer']}"
        urls = {
            "--listen-client-urls": self.etcd_url,
            "--advertise-client-urls": self.etcd_url,
            "--listen-peer-urls": etcd_peer,
            "--initial-advertise-peer-urls": etcd_peer,
            "--listen-metrics-urls": f"http://127.0.0.1:{ports['etcd-metrics']}",
            "--etcd-servers": self.etcd_url,
            "--secure-port": str(ports["apiserver"]),
        }
        out = [str(upstream_binary(binary))]
        for name, given in split_flags(args):
            if name in urls:
                value = urls[name]
            elif name == "--initial-cluster":
                member = given.split(",")[0].split("=")[0]  # controller-0
                value = f"{member}={etcd_peer}"
            else:
                value = self._path(given)
            if LAB_NODE_IP.search(value) and name not in KEPT_LAB_ADDRESSES:
                raise AssertionError(f"{component} {name}={value}: a lab address left unrewritten")
            out.append(f"{name}={value}")
        if component == "kube-apiserver":
            out.append("--bind-address=127.0.0.1")
        elif component == "kube-controller-manager":
            out.append(f"--secure-port={ports['controller-manager']}")
        elif component == "kube-scheduler":
            out.append(f"--secure-port={ports['scheduler']}")
        return out

    ADDED_FLAGS: ClassVar[dict[str, set[str]]] = {
        "etcd": set[str](),
        "kube-apiserver": {"--bind-address"},
        "kube-controller-manager": {"--secure-port"},
        "kube-scheduler": {"--secure-port"},
    }

    def flag_names(self, component: str) -> tuple[list[str], list[str]]:
        """The manifest's flag names and the ones this fixture runs, in order."""
        manifest = [name for name, _ in split_flags(self.manifests[component][1:])]
        running = [name for name, _ in split_flags(self.commands[component][1:])]
        return manifest, running

    def kubeconfig(self, name: str) -> Path:
        """The lab's kubeconfigs/NAME.kubeconfig, its server pointing at this apiserver."""
        path = self.workdir / "kubeconfigs" / f"{name}.kubeconfig"
        if not path.exists():
            source = self.rendered / "kubeconfigs" / f"{name}.kubeconfig"
            text, count = re.subn(
                r"(?m)^(\s*server:\s*)https://[^\s]+$", rf"\g<1>{self.api_url}", source.read_text()
            )
            assert count == 1, f"{source}: expected one server: line, found {count}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o600)
        return path

    # ------------------------------------------------------------------ processes

    def log_path(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    def _spawn(self, component: str) -> None:
        self.log_path(component).parent.mkdir(parents=True, exist_ok=True)
        with self.log_path(component).open("ab") as log:
            log.write(f"\n=== {shlex.join(self.commands[component])}\n".encode())
            log.flush()
            self.processes[component] = subprocess.Popen(
                self.commands[component],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )

    def start(self) -> ControlPlane:
        """Start every component and wait until they are ready; when one could not bind (another
        process took its port after `free_port`), start them all again on new ports."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            (self.workdir / "etcd").mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                for component in COMPONENTS:
                    self._spawn(component)
                self.wait_ready()
                return self
            except RuntimeError:
                self.stop()
                if attempt == PORT_ATTEMPTS or not self._port_taken():
                    raise
            except BaseException:
                self.stop()  # `with` calls no __exit__ when __enter__ raises
                raise
            shutil.rmtree(self.workdir / "etcd")  # a member of the old peer URL
            self._assign_ports()
        raise AssertionError("unreachable")

    def _port_taken(self) -> bool:
        """Whether a component's last run said its address was in use."""
        for component in COMPONENTS:
            path = self.log_path(component)
            text = path.read_text(errors="replace") if path.exists() else ""
            if "address already in use" in text.rpartition("\n=== ")[2]:
                return True
        return False

    def wait_ready(self, components: Sequence[str] = COMPONENTS) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        respawns = 0
        while time.monotonic() < deadline:
            dead = [c for c in components if self.processes[c].poll() is not None]
            if dead and set(dead) <= set(RESPAWNED) and respawns < 3:
                # They exit when they lose their leader lease (the apiserver or etcd was down
                # for a restart); the kubelet restarts a static pod, so does this.
                respawns += 1
                for component in dead:
                    self._spawn(component)
                continue
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited\n{self.logs_tail()}")
            pending = [c for c in components if c != "etcd" and not self._healthy(c)]
            if not pending:
                return
            last = ", ".join(pending)
            if "kube-apiserver" in pending:
                with contextlib.suppress(urllib3.exceptions.HTTPError):
                    last += "\n" + self.readyz()
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {READY_TIMEOUT} s: {last}\n{self.logs_tail()}")

    def _healthy(self, component: str) -> bool:
        if component == "kube-apiserver":
            try:
                return self.admin.get("/readyz", verbose="true").status == 200
            except urllib3.exceptions.HTTPError:
                return False
        port = self.ports["controller-manager" if "controller" in component else "scheduler"]
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # their self-signed serving certs; /healthz is public
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = urllib3.PoolManager(
                    ssl_context=context, cert_reqs="CERT_NONE", retries=False
                ).request("GET", f"https://127.0.0.1:{port}/healthz", timeout=5)
        except urllib3.exceptions.HTTPError:
            return False
        return response.status == 200

    def readyz(self) -> str:
        return str(self.admin.get("/readyz", verbose="true").body)

    def logs_tail(self, lines: int = 50) -> str:
        parts = []
        for component in COMPONENTS:
            path = self.log_path(component)
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"--- {component} (last {lines} lines of {path})")
            parts.extend(text[-lines:])
        return "\n".join(parts)

    def kill(self, component: str) -> None:
        process = self.processes.get(component)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def restart(self, component: str) -> None:
        self.kill(component)
        self._spawn(component)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for component in reversed(COMPONENTS):
            self.kill(component)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ clients and tools

    def client_for(self, common_name: str, organizations: Sequence[str] = ()) -> Api:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", common_name)
        crt, key = issue_client_cert(
            self.pki, self.workdir / "clients", safe, common_name, organizations
        )
        return Api(self.api_url, self.pki / "ca.crt", cert=crt, key=key)

    def node_client(self, name: str) -> Api:
        """The credentials of node NAME's kubelet (the Node authorizer and NodeRestriction)."""
        return self.client_for(f"system:node:{name}", ["system:nodes"])

    def token_client(self, token: str) -> Api:
        return Api(self.api_url, self.pki / "ca.crt", token=token)

    def kubectl(self, *args: str, kubeconfig: str = "admin") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(upstream_binary("kubectl")),
                "--kubeconfig",
                str(self.kubeconfig(kubeconfig)),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(upstream_binary("etcdctl")),
                f"--endpoints={self.etcd_url}",
                f"--cacert={self.pki / 'etcd' / 'ca.crt'}",
                f"--cert={self.pki / 'apiserver-etcd-client.crt'}",
                f"--key={self.pki / 'apiserver-etcd-client.key'}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    def etcd_revision(self) -> int:
        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json").stdout)
        return int(status[0]["Status"]["header"]["revision"])

    def compact(self) -> int:
        """`etcdctl compact` at the current revision; returns it."""
        revision = self.etcd_revision()
        self.etcdctl("compact", str(revision), "--physical")
        return revision
