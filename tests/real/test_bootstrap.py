"""TLS bootstrapping as the lab does it, against the real control plane: a worker holding only
the lab's bootstrap token gets its client certificate from kube-controller-manager (auto-approved
through the lab's RBAC bindings), registers its Node with it and asks for a serving certificate,
which nodehosts approves through the real /approval subresource and the signer issues; forged
serving requests stay pending; every registered Node gets a podCIDR from the lab's pod range."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers.controlplane import Api, ApiResponse, ControlPlane
from tests.helpers.csrs import CLIENT_USAGES, make_csr
from tests.helpers.kubelet import node_object
from tests.helpers.labdaemon import LabDaemon, start_lab_daemon
from tests.helpers.polling import wait_until

pytestmark = pytest.mark.real_cluster

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
POD_CIDR = ipaddress.ip_network("10.200.0.0/16")


@pytest.fixture(scope="module")
def approver(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabDaemon]:
    """nodehosts with lb-0's config: `[csr] approve = true`, allowed_cidrs the node network."""
    with start_lab_daemon(control_plane, tmp_path_factory.mktemp("approver")) as daemon:
        wait_until(lambda: daemon.events_named("ready"), timeout=60, what="ready")
        yield daemon


def bootstrap_token(plane: ControlPlane) -> str:
    """The only credential a worker starts with: the lab's rendered bootstrap kubeconfig."""
    config = yaml.safe_load((plane.rendered / "kubeconfigs" / "bootstrap.kubeconfig").read_text())
    (user,) = config["users"]
    return str(user["user"]["token"])


def issued(api: Api, name: str, *, timeout: float = 60) -> x509.Certificate:
    csr = wait_until(
        lambda: api.get(f"{CSRS}/{name}").ok(),
        until=lambda c: bool(c.get("status", {}).get("certificate")),
        timeout=timeout,
        interval=0.5,
        what=f"a certificate for {name}",
    )
    return x509.load_pem_x509_certificate(base64.b64decode(csr["status"]["certificate"]))


def conditions(plane: ControlPlane, name: str) -> list[dict[str, Any]]:
    return list(plane.admin.get(f"{CSRS}/{name}").ok().get("status", {}).get("conditions", []))


def bootstrap_kubelet(plane: ControlPlane, name: str, workdir: Path) -> Api:
    """What a kubelet does with --bootstrap-kubeconfig: a client CSR under the bootstrap
    token, then its own client certificate for everything else."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    token = plane.token_client(bootstrap_token(plane))
    csr = make_csr(
        name,
        name=f"node-csr-{name}",
        request=request,
        usages=CLIENT_USAGES,
        signer="kubernetes.io/kube-apiserver-client-kubelet",
    )
    created = token.post(CSRS, csr).ok()
    assert created["spec"]["username"].startswith("system:bootstrap:")
    assert "system:bootstrappers:workers" in created["spec"]["groups"]
    cert = issued(token, f"node-csr-{name}")
    approved = [c for c in conditions(plane, f"node-csr-{name}") if c["type"] == "Approved"]
    assert approved and approved[0]["reason"] == "AutoApproved"  # kube-controller-manager
    workdir.mkdir(parents=True, exist_ok=True)
    crt_path, key_path = workdir / f"{name}.crt", workdir / f"{name}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Api(plane.api_url, plane.pki / "ca.crt", cert=crt_path, key=key_path)


def submit(kubelet: Api, csr: dict[str, Any]) -> ApiResponse:
    return kubelet.post(CSRS, csr)


def test_bootstrap_register_and_serving_certificate(
    control_plane: ControlPlane, approver: LabDaemon, tmp_path: Path
) -> None:
    worker = bootstrap_kubelet(control_plane, "worker-9", tmp_path)
    neighbour = bootstrap_kubelet(control_plane, "worker-8", tmp_path)
    # The bootstrap token cannot register a Node; the issued node identity can, its own only.
    token = control_plane.token_client(bootstrap_token(control_plane))
    assert token.post("/api/v1/nodes", node_object("worker-9", "10.240.0.109")).status == 403
    assert worker.post("/api/v1/nodes", node_object("worker-8", "10.240.0.108")).status == 403
    worker.post("/api/v1/nodes", node_object("worker-9", "10.240.0.109")).ok()
    neighbour.post("/api/v1/nodes", node_object("worker-8", "10.240.0.108")).ok()
    wait_until(lambda: approver.hosts().get("worker-9"), timeout=20, what="worker-9 published")

    names = ["worker-9", "worker-9.node.internal"]
    forged = {
        "csr-other-name": make_csr("worker-9", name="csr-other-name", dns=["worker-8"]),
        "csr-other-ip": make_csr("worker-9", name="csr-other-ip", ips=["10.240.0.108"]),
        "csr-extra-name": make_csr(
            "worker-9", name="csr-extra-name", dns=[*names, "kubernetes.default"]
        ),
        "csr-other-cn": make_csr(
            "worker-9", name="csr-other-cn", common_names=["system:node:worker-8"], dns=["worker-8"]
        ),
        "csr-client-usage": make_csr(
            "worker-9",
            name="csr-client-usage",
            dns=names,
            usages=("digital signature", "server auth", "client auth"),
        ),
    }
    refused_at_create = {}
    for name, csr in forged.items():
        response = submit(worker, csr)
        if response.status != 201:
            refused_at_create[name] = response
    # NodeRestriction itself refuses a node's CSR for another node's name; the rest is ours.
    assert set(refused_at_create) == {"csr-other-cn"}
    refused = refused_at_create["csr-other-cn"]
    assert refused.status == 403, refused.body
    assert "can only create a node CSR with CN=system:node:worker-9" in refused.body["message"]
    honest = make_csr("worker-9", name="csr-honest", dns=names, ips=["10.240.0.109"])
    created = submit(worker, honest).ok()
    assert created["spec"]["username"] == "system:node:worker-9"  # set by the apiserver

    cert = issued(control_plane.admin, "csr-honest")
    (approved,) = [c for c in conditions(control_plane, "csr-honest") if c["type"] == "Approved"]
    assert approved["status"] == "True"
    assert [e["node"] for e in approver.events_named("csr_approved")] == ["worker-9"]
    lab_ca = x509.load_pem_x509_certificate((control_plane.pki / "ca.crt").read_bytes())
    assert cert.issuer == lab_ca.subject  # kube-controller-manager's --cluster-signing-*
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(names)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.240.0.109"]

    def pending() -> dict[str, str]:
        return {e["name"]: e["reason"] for e in approver.dump()["csrs"]["pending"]}

    expected = set(forged) - set(refused_at_create)
    reasons = wait_until(pending, until=lambda p: expected <= set(p), timeout=20, what="pending")
    for name in expected:
        assert conditions(control_plane, name) == [], name  # neither approved nor denied
        assert not control_plane.admin.get(f"{CSRS}/{name}").ok()["status"].get("certificate")
    assert reasons["csr-other-ip"] == "ip_san_not_node_address"


def test_the_controller_manager_allocates_pod_cidrs(control_plane: ControlPlane) -> None:
    for name, address in (("worker-10", "10.240.0.110"), ("worker-11", "10.240.0.111")):
        control_plane.node_client(name).post("/api/v1/nodes", node_object(name, address)).ok()
    cidrs = [
        wait_until(
            lambda name=name: control_plane.admin.get(f"/api/v1/nodes/{name}").ok()["spec"],
            until=lambda spec: bool(spec.get("podCIDR")),
            timeout=60,
            interval=0.5,
            what=f"{name}'s podCIDR",
        )["podCIDR"]
        for name in ("worker-10", "worker-11")
    ]
    networks = [ipaddress.ip_network(cidr) for cidr in cidrs]
    assert all(n.subnet_of(POD_CIDR) and n.prefixlen == 24 for n in networks), cidrs
    assert networks[0] != networks[1]
