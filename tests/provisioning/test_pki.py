"""render.sh's PKI: every certificate chains to its CA with the names, usages and identities
the components check, and each machine's bundle holds only what that machine needs."""

from __future__ import annotations

import ipaddress
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .conftest import require_tool

pytestmark = pytest.mark.provisioning

CLIENT = {ExtendedKeyUsageOID.CLIENT_AUTH}
SERVER = {ExtendedKeyUsageOID.SERVER_AUTH}
PEER = CLIENT | SERVER

# name: (CA, CN, O, extended key usages)
EXPECTED = {
    "apiserver": ("ca", "kube-apiserver", [], SERVER),
    "apiserver-kubelet-client": ("ca", "kube-apiserver-kubelet-client", [], CLIENT),
    "apiserver-etcd-client": ("etcd-ca", "kube-apiserver-etcd-client", [], CLIENT),
    "front-proxy-client": ("front-proxy-ca", "front-proxy-client", [], CLIENT),
    "admin": ("ca", "admin", ["system:masters"], CLIENT),
    "kube-controller-manager": ("ca", "system:kube-controller-manager", [], CLIENT),
    "kube-scheduler": ("ca", "system:kube-scheduler", [], CLIENT),
    "metrics-server": ("ca", "metrics-server", [], SERVER),
    "nodehosts-lb-0": ("ca", "nodehosts", [], CLIENT),
    **{
        f"kubelet-controller-{i}": ("ca", f"system:node:controller-{i}", ["system:nodes"], CLIENT)
        for i in range(3)
    },
    **{f"etcd-controller-{i}": ("etcd-ca", f"controller-{i}", [], PEER) for i in range(3)},
}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)} | {
        f"IP:{a}" for a in ext.get_values_for_type(x509.IPAddress)
    }


def test_every_certificate_is_expected(rendered: Path) -> None:
    """No certificate is issued that this test does not check."""
    issued = {p.stem for p in (rendered / "pki").glob("*.crt")} - {
        "ca",
        "front-proxy-ca",
        "etcd-ca",
    }
    assert issued == set(EXPECTED)


@pytest.mark.parametrize("ca", ["ca", "front-proxy-ca", "etcd-ca"])
def test_cas_are_self_signed_certificate_authorities(rendered: Path, ca: str) -> None:
    """CA:TRUE (critical), keyCertSign, self-signed, valid ten years."""
    cert = load(rendered / f"pki/{ca}.crt")
    assert cert.issuer == cert.subject
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    cert.verify_directly_issued_by(cert)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3649


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_certificate_identity_usage_and_chain(rendered: Path, name: str) -> None:
    """Signed by the right CA (openssl verify and cryptography), right CN/O, EKU, no CA flag."""
    ca, cn, orgs, ekus = EXPECTED[name]
    pki = rendered / "pki"
    cert = load(pki / f"{name}.crt")
    cert.verify_directly_issued_by(load(pki / f"{ca}.crt"))
    openssl = require_tool("openssl")
    purpose = "sslserver" if ekus == SERVER else "sslclient"
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(pki / f"{ca}.crt"),
            "-purpose",
            purpose,
            str(pki / f"{name}.crt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert names(cert, NameOID.COMMON_NAME) == [cn]
    assert names(cert, NameOID.ORGANIZATION_NAME) == orgs
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == ekus
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    key = serialization.load_pem_private_key((pki / f"{name}.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_apiserver_serves_every_name_clients_use(rendered: Path) -> None:
    """10.240.0.40, 10.32.0.1, 127.0.0.1, the controllers, kubernetes.default..."""
    got = sans(load(rendered / "pki/apiserver.crt"))
    assert {
        "IP:10.240.0.40",
        "IP:10.32.0.1",
        "IP:127.0.0.1",
        "IP:10.240.0.10",
        "IP:10.240.0.11",
        "IP:10.240.0.12",
        "DNS:controller-0",
        "DNS:controller-1.node.internal",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:lb-0",
    } <= got


def test_etcd_members_serve_their_own_address(rendered: Path) -> None:
    """Each etcd certificate names its controller and address, plus loopback."""
    for i in range(3):
        got = sans(load(rendered / f"pki/etcd-controller-{i}.crt"))
        assert got == {
            f"DNS:controller-{i}",
            "DNS:localhost",
            f"IP:10.240.0.{10 + i}",
            "IP:127.0.0.1",
        }
        for entry in got:
            if entry.startswith("IP:"):
                ipaddress.ip_address(entry[3:])


def test_metrics_server_serves_its_service_name(rendered: Path) -> None:
    """The aggregator reaches it as metrics-server.kube-system.svc."""
    assert "DNS:metrics-server.kube-system.svc" in sans(load(rendered / "pki/metrics-server.crt"))


def test_service_account_key_pair_matches(rendered: Path) -> None:
    """sa.pub is the public half of sa.key (the apiserver signs, everyone verifies)."""
    pki = rendered / "pki"
    key = serialization.load_pem_private_key((pki / "sa.key").read_bytes(), password=None)
    pub = serialization.load_pem_public_key((pki / "sa.pub").read_bytes())
    assert key.public_key().public_numbers() == pub.public_numbers()  # type: ignore[union-attr]


def bundle_files(rendered: Path, machine: str) -> set[str]:
    root = rendered / "nodes" / machine
    secret_dirs = (
        "etc/kubernetes/pki",
        "etc/kubernetes",
        "var/lib/kubelet",
        "etc/nodehosts",
        "etc/haproxy",
    )
    files = set()
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_file() and (
            rel.endswith((".key", ".crt", ".pub", ".env")) or "kubeconfig" in rel
        ):
            assert rel.startswith(secret_dirs), rel
            files.add(rel)
    return files


def test_a_worker_gets_only_the_ca_and_its_bootstrap_token(rendered: Path) -> None:
    """No private key at all: the kubelet creates its own and asks for certificates."""
    assert bundle_files(rendered, "worker-0") == {
        "etc/kubernetes/pki/ca.crt",
        "var/lib/kubelet/bootstrap-kubeconfig",
    }


def test_an_lb_gets_nodehosts_kubeconfig_and_the_ca_only(rendered: Path) -> None:
    """The LB never sees a CA key; nodehosts' kubeconfig is not world-readable."""
    assert bundle_files(rendered, "lb-0") == {
        "etc/haproxy/kubernetes-ca.crt",
        "etc/nodehosts/kubeconfig",
    }
    mode = (rendered / "nodes/lb-0/etc/nodehosts/kubeconfig").stat().st_mode & 0o777
    assert mode == 0o640


def test_a_controller_gets_its_own_etcd_and_kubelet_identity(rendered: Path) -> None:
    """controller-1's etcd and kubelet certificates are controller-1's; keys are 0600."""
    root = rendered / "nodes/controller-1"
    assert load(root / "etc/kubernetes/pki/etcd/server.crt") == load(
        rendered / "pki/etcd-controller-1.crt"
    )
    files = bundle_files(rendered, "controller-1")
    assert "etc/kubernetes/pki/ca.key" in files  # kube-controller-manager signs with it
    assert not any("controller-0" in f or "controller-2" in f for f in files)
    for rel in files:
        if rel.endswith((".key", ".env")) or "kubeconfig" in rel:
            assert (root / rel).stat().st_mode & 0o777 == 0o600, rel
