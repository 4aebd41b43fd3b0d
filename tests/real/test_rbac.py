"""deploy/rbac.yaml and rbac-csr.yaml, applied by the real kubectl, are least privilege: the
lab's nodehosts identity (CN=nodehosts from its rendered kubeconfig) can do what nodehosts does
and nothing it does not need."""

from __future__ import annotations

import pytest

from tests.helpers.controlplane import ControlPlane

pytestmark = pytest.mark.real_cluster

# (verb, resource[/subresource], name or "") nodehosts uses: the Node list/watch, the CSR
# approver's list/watch and /approval update, approving for the kubelet-serving signer.
ALLOWED = [
    ("get", "nodes", ""),
    ("list", "nodes", ""),
    ("watch", "nodes", ""),
    ("list", "certificatesigningrequests.certificates.k8s.io", ""),
    ("watch", "certificatesigningrequests.certificates.k8s.io", ""),
    ("update", "certificatesigningrequests.certificates.k8s.io/approval", ""),
]
FORBIDDEN = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("list", "pods", ""),
    ("get", "configmaps", ""),
    ("list", "configmaps", ""),
    ("update", "nodes", ""),
    ("patch", "nodes/status", ""),
    ("delete", "nodes", ""),
    ("create", "certificatesigningrequests.certificates.k8s.io", ""),
    ("update", "certificatesigningrequests.certificates.k8s.io/status", ""),
]
# Signer names hold a slash, which `kubectl auth can-i` cannot take as a resource name (it
# answers "no" for the one nodehosts may approve): these are asked with a
# SelfSubjectAccessReview of nodehosts' own, as the apiserver checks /approval.
SIGNERS = {
    "kubernetes.io/kubelet-serving": True,
    "kubernetes.io/kube-apiserver-client": False,
    "kubernetes.io/kube-apiserver-client-kubelet": False,
    "kubernetes.io/legacy-unknown": False,
}


def can_i(plane: ControlPlane, verb: str, resource: str, name: str) -> str:
    target = f"{resource}/{name}" if name else resource
    if "/" in resource and not name:
        resource, sub = resource.split("/")
        target, extra = resource, ["--subresource", sub]
    else:
        extra = []
    # Asked as nodehosts itself, with the lab's rendered kubeconfig (SelfSubjectAccessReview).
    done = plane.kubectl("auth", "can-i", verb, target, *extra, kubeconfig="nodehosts-lb-0")
    return done.stdout.strip()


@pytest.mark.parametrize(("verb", "resource", "name"), ALLOWED)
def test_what_nodehosts_does_is_allowed(
    control_plane: ControlPlane, verb: str, resource: str, name: str
) -> None:
    assert can_i(control_plane, verb, resource, name) == "yes"


@pytest.mark.parametrize(("verb", "resource", "name"), FORBIDDEN)
def test_everything_else_is_forbidden(
    control_plane: ControlPlane, verb: str, resource: str, name: str
) -> None:
    assert can_i(control_plane, verb, resource, name) == "no"


def test_reading_secrets_pods_and_configmaps_is_a_real_403(control_plane: ControlPlane) -> None:
    nodehosts = control_plane.client_for("nodehosts")  # the identity of its certificate
    for path in (
        "/api/v1/secrets",
        "/api/v1/namespaces/kube-system/secrets",
        "/api/v1/pods",
        "/api/v1/configmaps",
        "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt",
    ):
        response = nodehosts.get(path)
        assert response.status == 403, (path, response.body)
        assert response.body["reason"] == "Forbidden"
    assert nodehosts.get("/api/v1/nodes").status == 200
    listed = nodehosts.get("/apis/certificates.k8s.io/v1/certificatesigningrequests")
    assert listed.status == 200


def test_nodehosts_may_approve_for_the_kubelet_serving_signer_only(
    control_plane: ControlPlane,
) -> None:
    nodehosts = control_plane.client_for("nodehosts")
    for signer, allowed in SIGNERS.items():
        review = nodehosts.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {
                        "group": "certificates.k8s.io",
                        "resource": "signers",
                        "verb": "approve",
                        "name": signer,
                    }
                },
            },
        ).ok()
        assert review["status"]["allowed"] is allowed, (signer, review["status"])
