"""CertificateSigningRequest objects for tests, with real x509 requests made by `cryptography`.

Contract: `make_request` returns the PEM of a certificate request with whatever subject and SANs
a test asks for, signed by a cached ECDSA P-256 or RSA-2048 key (keys are made once per
process); `make_csr` wraps one into the JSON the API serves for a certificates.k8s.io/v1
CertificateSigningRequest. Defaults describe an honest kubelet serving request from `node`.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KeyKind = Literal["ecdsa", "rsa"]

SIGNER = "kubernetes.io/kubelet-serving"
SERVING_USAGES = ("digital signature", "server auth")
LEGACY_SERVING_USAGES = ("digital signature", "key encipherment", "server auth")
CLIENT_USAGES = ("digital signature", "client auth")


@functools.cache
def private_key(kind: KeyKind = "ecdsa") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """One key per kind per process: generating RSA keys is slow."""
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_request(
    *,
    common_names: Sequence[str] = (),
    organizations: Sequence[str] = (),
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
    emails: Iterable[str] = (),
    uris: Iterable[str] = (),
    key: KeyKind = "ecdsa",
) -> bytes:
    """The PEM of a certificate request with exactly these subject attributes and SANs."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes += [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.RFC822Name(e) for e in emails]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = builder.sign(private_key(key), hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def make_csr(
    node: str = "worker-0",
    *,
    name: str | None = None,
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
    emails: Iterable[str] = (),
    uris: Iterable[str] = (),
    key: KeyKind = "ecdsa",
    common_names: Sequence[str] | None = None,
    organizations: Sequence[str] = ("system:nodes",),
    username: str | None = None,
    groups: Sequence[str] = ("system:nodes", "system:authenticated"),
    usages: Sequence[str] = SERVING_USAGES,
    signer: str = SIGNER,
    expiration_seconds: int | None = None,
    conditions: Sequence[dict[str, Any]] = (),
    certificate: str | None = None,
    request: bytes | str | None = None,
) -> dict[str, Any]:
    """A CSR object as the API serves it; `request` overrides the generated PEM (raw bytes are
    base64-encoded, a str is used as spec.request verbatim)."""
    username = f"system:node:{node}" if username is None else username
    if request is None:
        request = make_request(
            common_names=(username,) if common_names is None else common_names,
            organizations=organizations,
            dns=dns,
            ips=ips,
            emails=emails,
            uris=uris,
            key=key,
        )
    encoded = request if isinstance(request, str) else base64.b64encode(request).decode("ascii")
    spec: dict[str, Any] = {
        "request": encoded,
        "signerName": signer,
        "usages": list(usages),
        "username": username,
        "groups": list(groups),
    }
    if expiration_seconds is not None:
        spec["expirationSeconds"] = expiration_seconds
    status: dict[str, Any] = {}
    if conditions:
        status["conditions"] = list(conditions)
    if certificate is not None:
        status["certificate"] = certificate
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name or f"csr-{node}"},
        "spec": spec,
        "status": status,
    }
