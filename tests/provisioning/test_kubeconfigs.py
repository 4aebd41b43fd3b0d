"""render.sh's kubeconfigs load with the official kubernetes client, with the right server,
CA and identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client, config

pytestmark = pytest.mark.provisioning

# kubeconfig: (server, user name, client certificate CN or None for a token)
EXPECTED = {
    "admin": ("https://10.240.0.40:6443", "admin"),
    "kube-controller-manager": ("https://127.0.0.1:6443", "system:kube-controller-manager"),
    "kube-scheduler": ("https://127.0.0.1:6443", "system:kube-scheduler"),
    "kubelet-controller-0": ("https://127.0.0.1:6443", "system:node:controller-0"),
    "kubelet-controller-2": ("https://127.0.0.1:6443", "system:node:controller-2"),
    "nodehosts-lb-0": ("https://127.0.0.1:6443", "nodehosts"),
    "bootstrap": ("https://10.240.0.40:6443", None),
}


def all_kubeconfigs(rendered: Path) -> list[Path]:
    found = sorted((rendered / "kubeconfigs").glob("*.kubeconfig"))
    found += sorted((rendered / "nodes").glob("*/etc/kubernetes/*.kubeconfig"))
    found += sorted((rendered / "nodes").glob("*/var/lib/kubelet/*kubeconfig"))
    found += sorted((rendered / "nodes").glob("*/etc/nodehosts/kubeconfig"))
    return found


def load(path: Path) -> client.Configuration:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    return configuration


def test_every_kubeconfig_loads_with_the_kubernetes_client(rendered: Path) -> None:
    """load_kube_config accepts each one (machine bundles included) and trusts the lab CA."""
    paths = all_kubeconfigs(rendered)
    assert len(paths) >= 7 + 3 * 4 + 2 + 1
    ca_pem = (rendered / "pki/ca.crt").read_bytes()
    for path in paths:
        configuration = load(path)
        assert configuration.host.startswith("https://"), path
        assert Path(configuration.ssl_ca_cert).read_bytes() == ca_pem, path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kubeconfig_server_and_identity(rendered: Path, name: str) -> None:
    """Components on a controller use 127.0.0.1; admin and workers use the LB; CN is the user."""
    server, cn = EXPECTED[name]
    configuration = load(rendered / f"kubeconfigs/{name}.kubeconfig")
    assert configuration.host == server
    if cn is None:
        # The key is "BearerToken" in kubernetes 37, "authorization" in older releases.
        (token,) = configuration.api_key.values()
        assert token.startswith("Bearer ")
        env = dict(
            line.split("=", 1)
            for line in (rendered / "pki/bootstrap-token.env").read_text().split()
        )
        assert token == f"Bearer {env['BOOTSTRAP_TOKEN_ID']}.{env['BOOTSTRAP_TOKEN_SECRET']}"
    else:
        cert = x509.load_pem_x509_certificate(Path(configuration.cert_file).read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        assert Path(configuration.key_file).read_bytes().startswith(b"-----BEGIN")


def test_kubeconfigs_are_self_contained(rendered: Path) -> None:
    """Certificates are embedded (…-data), so a kubeconfig works wherever it is copied."""
    for path in all_kubeconfigs(rendered):
        doc = yaml.safe_load(path.read_text())
        cluster = doc["clusters"][0]["cluster"]
        assert "certificate-authority-data" in cluster, path
        user = doc["users"][0]["user"]
        assert set(user) in ({"client-certificate-data", "client-key-data"}, {"token"}), path
        assert path.stat().st_mode & 0o077 in (0, 0o040), path  # never world-readable
