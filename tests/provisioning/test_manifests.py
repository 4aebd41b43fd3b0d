"""render.sh's Kubernetes manifests: every object validates (strictly: no unknown fields)
against the OpenAPI schemas of the pinned Kubernetes minor, offline, with kubernetes-validate;
and the settings the lab depends on are there."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DEFAULTS

pytestmark = pytest.mark.provisioning

MINOR = re.match(r"v?(\d+\.\d+)", DEFAULTS["KUBERNETES_VERSION"]).group(1)  # type: ignore[union-attr]


def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate as kv
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed (CI: pip install kubernetes-validate==1.37.0)"
        )
    return kv


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files(rendered: Path) -> list[Path]:
    return sorted(rendered.glob("nodes/*/etc/kubernetes/manifests/*.yaml")) + sorted(
        rendered.glob("addons/*.yaml")
    )


def test_the_pinned_minor_has_bundled_schemas() -> None:
    """kubernetes-validate ships the schemas of the pinned minor (no download at test time)."""
    kv = kubernetes_validate()
    from kubernetes_validate import utils

    assert MINOR in {utils.major_minor(v) for v in utils.all_versions()}
    assert kv is not None


def test_every_manifest_validates_against_the_pinned_kubernetes_schemas(rendered: Path) -> None:
    """Static pods and add-ons: each object is a known kind and valid, strictly, for 1.36."""
    kv = kubernetes_validate()
    files = manifest_files(rendered)
    assert len(files) == 3 * 4 + 7
    kinds = set()
    for path in files:
        for doc in documents(path):
            try:
                assert kv.validate(doc, MINOR, strict=True) == MINOR
            except kv.ValidationError as error:
                where = f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, error.path))}"
                pytest.fail(f"{path.relative_to(rendered)}: {where}: {error.message}")
            except kv.SchemaNotFoundError as error:
                pytest.fail(f"{path.relative_to(rendered)}: {error.message}")
            kinds.add(doc["kind"])
    assert {
        "Pod",
        "DaemonSet",
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
        "APIService",
        "ClusterRole",
        "ClusterRoleBinding",
        "RoleBinding",
        "ServiceAccount",
        "CustomResourceDefinition",  # Calico's, patched from the upstream-shaped fixture
        "PodDisruptionBudget",
    } <= kinds


def test_validation_catches_a_broken_manifest(rendered: Path) -> None:
    """A misspelt field is an error: the strict schemas really are applied."""
    kv = kubernetes_validate()
    (pod,) = documents(rendered / "nodes/controller-0/etc/kubernetes/manifests/kube-apiserver.yaml")
    pod["spec"]["containers"][0]["comand"] = pod["spec"]["containers"][0].pop("command")
    with pytest.raises(kv.ValidationError):
        kv.validate(pod, MINOR, strict=True)


def command(rendered: Path, machine: str, component: str) -> list[str]:
    (pod,) = documents(rendered / f"nodes/{machine}/etc/kubernetes/manifests/{component}.yaml")
    return pod["spec"]["containers"][0]["command"]


def flags(rendered: Path, machine: str, component: str) -> dict[str, str]:
    return dict(
        arg.removeprefix("--").split("=", 1) for arg in command(rendered, machine, component)[1:]
    )


def test_apiserver_flags(rendered: Path) -> None:
    """Node,RBAC, bootstrap tokens, front proxy, verified kubelets, all etcd members."""
    f = flags(rendered, "controller-1", "kube-apiserver")
    assert f["authorization-mode"] == "Node,RBAC"
    assert f["enable-admission-plugins"] == "NodeRestriction"
    assert f["enable-bootstrap-token-auth"] == "true"
    assert f["advertise-address"] == "10.240.0.11"
    assert f["service-cluster-ip-range"] == "10.32.0.0/24"
    assert f["etcd-servers"].split(",") == [f"https://10.240.0.{10 + i}:2379" for i in range(3)]
    for flag in (
        "proxy-client-cert-file",
        "proxy-client-key-file",
        "requestheader-client-ca-file",
        "requestheader-allowed-names",
        "requestheader-username-headers",
        "requestheader-group-headers",
        "requestheader-extra-headers-prefix",
        "kubelet-certificate-authority",
        "service-account-signing-key-file",
    ):
        assert flag in f, flag
    assert f["kubelet-preferred-address-types"].startswith("Hostname")
    assert "anonymous-auth" not in f  # probes read /livez anonymously


def test_controller_manager_flags(rendered: Path) -> None:
    """Node CIDRs from 10.200.0.0/16, and it signs kubelet certificates with the cluster CA."""
    f = flags(rendered, "controller-0", "kube-controller-manager")
    assert f["allocate-node-cidrs"] == "true"
    assert f["cluster-cidr"] == "10.200.0.0/16"
    assert f["node-cidr-mask-size"] == "24"
    assert f["cluster-signing-cert-file"] == "/etc/kubernetes/pki/ca.crt"
    assert f["cluster-signing-key-file"] == "/etc/kubernetes/pki/ca.key"
    assert "bootstrapsigner" in f["controllers"] and "tokencleaner" in f["controllers"]


def test_etcd_members_know_each_other(rendered: Path) -> None:
    """Every member lists the same initial cluster and serves TLS with client auth."""
    clusters = {flags(rendered, f"controller-{i}", "etcd")["initial-cluster"] for i in range(3)}
    assert len(clusters) == 1
    f = flags(rendered, "controller-2", "etcd")
    assert f["name"] == "controller-2"
    assert f["listen-peer-urls"] == "https://10.240.0.12:2380"
    assert f["client-cert-auth"] == f["peer-client-cert-auth"] == "true"


def test_static_pod_files_reference_what_the_bundle_installs(rendered: Path) -> None:
    """Every /etc/kubernetes path a static pod names exists in that controller's files."""
    root = rendered / "nodes/controller-0"
    for path in root.glob("etc/kubernetes/manifests/*.yaml"):
        text = path.read_text()
        for ref in set(re.findall(r"(/etc/kubernetes/[\w./-]+\.(?:crt|key|pub|kubeconfig))", text)):
            assert (root / ref.lstrip("/")).is_file(), f"{path.name}: {ref}"


def kubelet_config(rendered: Path, machine: str) -> dict[str, Any]:
    return yaml.safe_load((rendered / f"nodes/{machine}/var/lib/kubelet/config.yaml").read_text())


def test_kubelet_configuration(rendered: Path) -> None:
    """Certificate rotation and serving CSRs everywhere; static pods and a taint on controllers."""
    for machine in ("controller-0", "worker-0"):
        c = kubelet_config(rendered, machine)
        assert (c["apiVersion"], c["kind"]) == (
            "kubelet.config.k8s.io/v1beta1",
            "KubeletConfiguration",
        )
        assert c["rotateCertificates"] is True
        assert c["serverTLSBootstrap"] is True
        assert c["authentication"]["anonymous"]["enabled"] is False
        assert c["authorization"]["mode"] == "Webhook"
        assert c["clusterDNS"] == ["10.32.0.10"]
        assert c["cgroupDriver"] == "systemd"
    controller = kubelet_config(rendered, "controller-0")
    assert controller["staticPodPath"] == "/etc/kubernetes/manifests"
    assert controller["registerWithTaints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    ]
    assert "staticPodPath" not in kubelet_config(rendered, "worker-0")


def test_worker_kubelet_joins_by_bootstrap_token_on_the_private_address(rendered: Path) -> None:
    """--bootstrap-kubeconfig, --node-ip from /etc/default/kubelet (never 10.0.2.15)."""
    unit = (rendered / "nodes/worker-0/etc/systemd/system/kubelet.service").read_text()
    assert "--bootstrap-kubeconfig=/var/lib/kubelet/bootstrap-kubeconfig" in unit
    assert "--node-ip=${KUBELET_NODE_IP}" in unit
    assert "--node-labels=node.kubernetes.io/role=worker" in unit
    assert (
        rendered / "nodes/worker-0/etc/default/kubelet"
    ).read_text() == "KUBELET_NODE_IP=10.240.0.101\n"
    controller_unit = (
        rendered / "nodes/controller-0/etc/systemd/system/kubelet.service"
    ).read_text()
    assert "--bootstrap-kubeconfig" not in controller_unit
    assert (
        rendered / "nodes/controller-0/etc/default/kubelet"
    ).read_text() == "KUBELET_NODE_IP=10.240.0.10\n"


def test_containerd_configuration(rendered: Path) -> None:
    """Version 3 (containerd 2.x), systemd cgroups like the kubelet, streams on loopback."""
    c = tomllib.loads((rendered / "nodes/worker-1/etc/containerd/config.toml").read_text())
    assert c["version"] == 3
    runtime = c["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert c["plugins"]["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"
    assert (
        c["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"]
        == DEFAULTS["PAUSE_IMAGE"]
    )


def addon(rendered: Path, file: str, kind: str, name: str) -> dict[str, Any]:
    for doc in documents(rendered / "addons" / file):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} in {file}")


def test_calico_is_upstreams_manifest_patched_for_the_lab(rendered: Path) -> None:
    """render.sh patches the given upstream manifest (here the fixture) into 20-calico.yaml:
    host-local IPAM, the node network, the pool, calico-kube-controllers, the CRDs."""
    config = addon(rendered, "20-calico.yaml", "ConfigMap", "calico-config")["data"][
        "cni_network_config"
    ]
    cni = json.loads(config.replace("__CNI_MTU__", "1440"))
    assert cni["plugins"][0]["ipam"] == {"type": "host-local", "subnet": "usePodCidr"}
    node = addon(rendered, "20-calico.yaml", "DaemonSet", "calico-node")
    env = {
        e["name"]: e.get("value") for e in node["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["IP_AUTODETECTION_METHOD"] == "cidr=10.240.0.0/24"
    assert env["USE_POD_CIDR"] == "true"
    assert env["CALICO_IPV4POOL_CIDR"] == "10.200.0.0/16"
    image = node["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":" + DEFAULTS["CALICO_VERSION"])
    addon(rendered, "20-calico.yaml", "Deployment", "calico-kube-controllers")
    addon(rendered, "20-calico.yaml", "CustomResourceDefinition", "ippools.crd.projectcalico.org")
    endpoint = addon(rendered, "20-calico.yaml", "ConfigMap", "kubernetes-services-endpoint")
    assert endpoint["data"]["KUBERNETES_SERVICE_HOST"] == "10.240.0.40"


def test_encryption_of_secrets_at_rest(rendered: Path) -> None:
    """A valid EncryptionConfiguration (Secrets, a 32-byte secretbox key, identity last to read
    what was written before), the same on every controller, root's only, given to the
    apiserver by flag and mounted read-only into its static pod."""
    import base64

    configs = {
        (rendered / f"nodes/controller-{i}/etc/kubernetes/encryption-config.yaml").read_text()
        for i in range(3)
    }
    assert len(configs) == 1  # every apiserver must decrypt what another wrote
    path = rendered / "nodes/controller-0/etc/kubernetes/encryption-config.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(path.read_text())
    assert (config["apiVersion"], config["kind"]) == (
        "apiserver.config.k8s.io/v1",
        "EncryptionConfiguration",
    )
    (rule,) = config["resources"]
    assert rule["resources"] == ["secrets"]
    first, last = rule["providers"]
    (key,) = first["secretbox"]["keys"]
    assert len(base64.b64decode(key["secret"], validate=True)) == 32
    assert last == {"identity": {}}
    assert not (rendered / "nodes/worker-0/etc/kubernetes/encryption-config.yaml").exists()

    f = flags(rendered, "controller-0", "kube-apiserver")
    target = f["encryption-provider-config"]
    assert target == "/etc/kubernetes/encryption-config.yaml"
    (pod,) = documents(rendered / "nodes/controller-0/etc/kubernetes/manifests/kube-apiserver.yaml")
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[target]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts[target]["name"]]["hostPath"] == {"path": target, "type": "File"}


def test_kube_proxy_runs_as_a_daemonset_through_the_lb(rendered: Path) -> None:
    """Its kubeconfig points at the LB, its config at the pod CIDR."""
    cm = addon(rendered, "10-kube-proxy.yaml", "ConfigMap", "kube-proxy")["data"]
    assert yaml.safe_load(cm["config.conf"])["clusterCIDR"] == "10.200.0.0/16"
    kc = yaml.safe_load(cm["kubeconfig.conf"])
    assert kc["clusters"][0]["cluster"]["server"] == "https://10.240.0.40:6443"
    ds = addon(rendered, "10-kube-proxy.yaml", "DaemonSet", "kube-proxy")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        DEFAULTS["KUBERNETES_VERSION"]
    )


def test_cluster_dns_service_address(rendered: Path) -> None:
    """In-cluster CoreDNS at 10.32.0.10, the kubelets' clusterDNS."""
    svc = addon(rendered, "30-coredns.yaml", "Service", "kube-dns")
    assert svc["spec"]["clusterIP"] == "10.32.0.10"


def test_metrics_server_verifies_kubelet_certificates(rendered: Path) -> None:
    """No --kubelet-insecure-tls; the kubelet CA is given; the APIService carries our CA."""
    dep = addon(rendered, "40-metrics-server.yaml", "Deployment", "metrics-server")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any("insecure" in a for a in args)
    assert (
        "--kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
        in args
    )
    assert "--kubelet-preferred-address-types=Hostname,InternalIP" in args
    api = addon(rendered, "40-metrics-server.yaml", "APIService", "v1beta1.metrics.k8s.io")
    assert "insecureSkipTLSVerify" not in api["spec"]
    import base64

    assert base64.b64decode(api["spec"]["caBundle"]) == (rendered / "pki/ca.crt").read_bytes()


def test_bootstrap_token_and_tls_bootstrapping_rbac(rendered: Path) -> None:
    """The token Secret matches the workers' kubeconfig; bootstrappers may create CSRs that
    are auto-approved for client certificates only."""
    secret = addon(
        rendered,
        "00-bootstrap-token.yaml",
        "Secret",
        next(d["metadata"]["name"] for d in documents(rendered / "addons/00-bootstrap-token.yaml")),
    )
    data = secret["stringData"]
    token = yaml.safe_load((rendered / "kubeconfigs/bootstrap.kubeconfig").read_text())["users"][0][
        "user"
    ]["token"]
    assert token == f"{data['token-id']}.{data['token-secret']}"
    assert secret["metadata"]["name"] == f"bootstrap-token-{data['token-id']}"
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    # It expires BOOTSTRAP_TOKEN_TTL_HOURS (24) after it is rendered, as RFC 3339 UTC.
    from datetime import UTC, datetime, timedelta

    expiration = datetime.strptime(data["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    rendered_at = datetime.fromtimestamp(
        (rendered / "addons/00-bootstrap-token.yaml").stat().st_mtime, UTC
    )
    assert abs(expiration - rendered_at - timedelta(hours=24)) < timedelta(minutes=5)
    roles = {d["roleRef"]["name"] for d in documents(rendered / "addons/01-node-rbac.yaml")}
    assert roles == {
        "system:node-bootstrapper",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "system:kubelet-api-admin",
    }


def rules(docs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            tuple(r["apiGroups"]),
            tuple(r["resources"]),
            tuple(sorted(r["verbs"])),
            tuple(r.get("resourceNames", ())),
        )
        for d in docs
        if d["kind"] == "ClusterRole"
        for r in d["rules"]
    )


def test_nodehosts_rbac_can_approve_kubelet_serving_csrs_and_nothing_more(rendered: Path) -> None:
    """nodes get/list/watch; CSRs get/list/watch; /approval update; kubelet-serving approve."""
    docs = documents(rendered / "addons/02-nodehosts-rbac.yaml")
    assert rules(docs) == sorted(
        [
            (("",), ("nodes",), ("get", "list", "watch"), ()),
            (
                ("certificates.k8s.io",),
                ("certificatesigningrequests",),
                ("get", "list", "watch"),
                (),
            ),
            (("certificates.k8s.io",), ("certificatesigningrequests/approval",), ("update",), ()),
            (
                ("certificates.k8s.io",),
                ("signers",),
                ("approve",),
                ("kubernetes.io/kubelet-serving",),
            ),
        ]
    )
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nodehosts"}
    ]


def test_nodehosts_rbac_matches_the_packaged_one(rendered: Path) -> None:
    """Same rules as deploy/rbac-csr.yaml, which the Debian package ships."""
    packaged = Path(__file__).resolve().parents[2] / "deploy/rbac-csr.yaml"
    assert rules(documents(rendered / "addons/02-nodehosts-rbac.yaml")) == rules(
        documents(packaged)
    )
