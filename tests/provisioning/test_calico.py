"""Calico from upstream's manifest: the patch step (provisioning/lib/calico_patch.py) run as the
controller runs it, on a fixture shaped like upstream's manifests/calico.yaml, and the
download step's checksum (lib/calico.sh). A manifest that is not shaped as expected must stop
provisioning with a message naming what is missing, never be patched half-way."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CALICO_FIXTURE, DEFAULTS, PROVISIONING, bash_lib

pytestmark = pytest.mark.provisioning

PATCH = PROVISIONING / "lib/calico_patch.py"
ARGS = [
    "--version",
    DEFAULTS["CALICO_VERSION"],
    "--node-cidr",
    "10.240.0.0/24",
    "--pod-cidr",
    "10.200.0.0/16",
    "--api-host",
    "10.240.0.40",
]

Doc = dict[str, Any]


def run_patch(manifest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PATCH), *ARGS],
        input=manifest,
        capture_output=True,
        text=True,
        check=False,
    )


def fixture_docs() -> list[Doc]:
    return [d for d in yaml.safe_load_all(CALICO_FIXTURE.read_text()) if d]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def node_spec(docs: list[Doc]) -> Doc:
    return find(docs, "DaemonSet", "calico-node")["spec"]["template"]["spec"]


def calico_node_env(docs: list[Doc]) -> list[Doc]:
    return node_spec(docs)["containers"][0]["env"]


@pytest.fixture(scope="module")
def patched() -> list[Doc]:
    result = run_patch(CALICO_FIXTURE.read_text())
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_cni_uses_host_local_ipam_from_the_node_podcidr(patched: list[Doc]) -> None:
    """ipam host-local/usePodCidr; the rest of the CNI config (MTU placeholder too) as upstream."""
    template = find(patched, "ConfigMap", "calico-config")["data"]["cni_network_config"]
    assert '"mtu": __CNI_MTU__' in template  # the installer still substitutes it
    cni = json.loads(template.replace("__CNI_MTU__", "1440"))
    calico = cni["plugins"][0]
    assert calico["type"] == "calico"
    assert calico["ipam"] == {"type": "host-local", "subnet": "usePodCidr"}
    assert calico["nodename"] == "__KUBERNETES_NODE_NAME__"
    assert [p["type"] for p in cni["plugins"]] == ["calico", "portmap"]


def test_calico_node_env_node_address_pool_and_pod_cidr(patched: list[Doc]) -> None:
    """Autodetection inside the node network, USE_POD_CIDR, the pool, no IP-in-IP."""
    env = {e["name"]: e.get("value") for e in calico_node_env(patched)}
    assert env["IP"] == "autodetect"
    assert env["IP_AUTODETECTION_METHOD"] == "cidr=10.240.0.0/24"
    assert env["USE_POD_CIDR"] == "true"
    assert env["CALICO_IPV4POOL_CIDR"] == "10.200.0.0/16"
    assert env["CALICO_IPV4POOL_IPIP"] == "Never"
    assert env["CALICO_IPV4POOL_VXLAN"] == "Never"
    names = [e["name"] for e in calico_node_env(patched)]
    assert len(names) == len(set(names))
    # New settings sit next to IP, where a reader of upstream's manifest looks for them.
    at = names.index("IP")
    assert names[at + 1 : at + 4] == [
        "IP_AUTODETECTION_METHOD",
        "USE_POD_CIDR",
        "CALICO_IPV4POOL_CIDR",
    ]


def test_upgrade_ipam_init_container_and_its_volume_are_gone(patched: list[Doc]) -> None:
    """It would migrate host-local allocations to calico-ipam and delete the CNI binaries."""
    spec = node_spec(patched)
    assert [c["name"] for c in spec["initContainers"]] == ["install-cni"]
    assert "host-local-net-dir" not in {v["name"] for v in spec["volumes"]}
    assert {"cni-bin-dir", "cni-net-dir", "var-run-calico"} <= {v["name"] for v in spec["volumes"]}


def test_calico_reaches_the_api_through_the_lb(patched: list[Doc]) -> None:
    """The kubernetes-services-endpoint ConfigMap upstream's containers read, before the rest."""
    endpoint = find(patched, "ConfigMap", "kubernetes-services-endpoint")
    assert endpoint["metadata"]["namespace"] == "kube-system"
    assert endpoint["data"] == {
        "KUBERNETES_SERVICE_HOST": "10.240.0.40",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    kinds = [(d["kind"], d["metadata"]["name"]) for d in patched]
    assert kinds.index(("ConfigMap", "kubernetes-services-endpoint")) < kinds.index(
        ("DaemonSet", "calico-node")
    )


def test_everything_else_is_upstreams(patched: list[Doc]) -> None:
    """Same documents (plus one ConfigMap): CRDs, RBAC with the kubevirt rule, kube-controllers."""
    original = fixture_docs()
    assert len(patched) == len(original) + 1
    for kind, name in [
        ("CustomResourceDefinition", "ippools.crd.projectcalico.org"),
        ("ClusterRole", "calico-node"),
        ("Deployment", "calico-kube-controllers"),
        ("PodDisruptionBudget", "calico-kube-controllers"),
    ]:
        assert find(patched, kind, name) == find(original, kind, name)
    rules = find(patched, "ClusterRole", "calico-node")["rules"]
    assert any("virtualmachineinstancemigrations" in r["resources"] for r in rules)


def test_the_output_is_stable() -> None:
    """Patching twice gives the same bytes: a re-run of addons.sh changes nothing."""
    first = run_patch(CALICO_FIXTURE.read_text())
    assert first.returncode == 0
    assert run_patch(CALICO_FIXTURE.read_text()).stdout == first.stdout


def dump(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def drop_upgrade_ipam(docs: list[Doc]) -> None:
    spec = node_spec(docs)
    spec["initContainers"] = [c for c in spec["initContainers"] if c["name"] != "upgrade-ipam"]


def rename_ip_env(docs: list[Doc]) -> None:
    for e in calico_node_env(docs):
        if e["name"] == "IP":
            e["name"] = "IP_ADDRESS"


def set_ipam(docs: list[Doc]) -> None:
    data = find(docs, "ConfigMap", "calico-config")["data"]
    data["cni_network_config"] = data["cni_network_config"].replace("calico-ipam", "host-local")


def other_version(docs: list[Doc]) -> None:
    spec = node_spec(docs)
    spec["containers"][0]["image"] = "quay.io/calico/node:v3.31.0"


BROKEN: dict[str, tuple[Callable[[list[Doc]], None], str]] = {
    "no calico-node DaemonSet": (
        lambda docs: docs.remove(find(docs, "DaemonSet", "calico-node")),
        "expected exactly one DaemonSet calico-node, found 0",
    ),
    "no calico-config ConfigMap": (
        lambda docs: docs.remove(find(docs, "ConfigMap", "calico-config")),
        "expected exactly one ConfigMap calico-config, found 0",
    ),
    "no calico-kube-controllers": (
        lambda docs: docs.remove(find(docs, "Deployment", "calico-kube-controllers")),
        "expected exactly one Deployment calico-kube-controllers, found 0",
    ),
    "no upgrade-ipam init container": (
        drop_upgrade_ipam,
        "expected one container upgrade-ipam in calico-node's initContainers, found 0",
    ),
    "IP env renamed": (rename_ip_env, "calico-node has no env IP"),
    "CNI config already host-local": (set_ipam, "expected ipam calico-ipam"),
    "CNI config not JSON": (
        lambda docs: find(docs, "ConfigMap", "calico-config")["data"].update(
            cni_network_config='{"mtu": __CNI_MTU__, '
        ),
        "cni_network_config is not JSON",
    ),
    "CNI config without the MTU placeholder": (
        lambda docs: find(docs, "ConfigMap", "calico-config")["data"].update(
            cni_network_config='{"plugins": []}'
        ),
        "cni_network_config: no __CNI_MTU__",
    ),
    "no kubernetes-services-endpoint envFrom": (
        lambda docs: node_spec(docs)["containers"][0].pop("envFrom"),
        "calico-node does not read the kubernetes-services-endpoint ConfigMap",
    ),
    "image of another release": (other_version, "images not of Calico v3.32.2"),
    "IPIP env missing": (
        lambda docs: calico_node_env(docs).remove(
            next(e for e in calico_node_env(docs) if e["name"] == "CALICO_IPV4POOL_IPIP")
        ),
        "calico-node has no env CALICO_IPV4POOL_IPIP",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN), ids=str)
def test_an_unexpected_shape_fails_loudly_and_writes_nothing(case: str) -> None:
    """Exit 1, one message naming what is missing, and no manifest on stdout."""
    breaker, message = BROKEN[case]
    docs = fixture_docs()
    breaker(docs)
    result = run_patch(dump(docs))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "the Calico manifest is not shaped as expected" in result.stderr
    assert message in result.stderr


def test_not_yaml_at_all_fails_loudly() -> None:
    """A download that is an HTML error page, say."""
    result = run_patch("<html>\n  <body>: 404: Not Found: [\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "not shaped as expected" in result.stderr


def test_render_calico_keeps_the_old_file_when_the_patch_fails(tmp_path: Path) -> None:
    """render_calico dies before writing: the last good 20-calico.yaml stays."""
    out = tmp_path / "20-calico.yaml"
    out.write_text("last good\n")
    broken = tmp_path / "calico.yaml"
    broken.write_text("kind: Nothing\n")
    result = bash_lib(f'render_calico "{broken}" "{out}"', LAB_PYTHON=sys.executable)
    assert result.returncode != 0
    assert "could not patch Calico's manifest" in result.stderr
    assert out.read_text() == "last good\n"


def test_fetch_takes_the_offline_copy_and_checks_its_checksum(tmp_path: Path) -> None:
    """LAB_BINARIES/calico.yaml is used when its SHA-256 is the pinned one, refused otherwise."""
    offline = tmp_path / "binaries"
    offline.mkdir()
    (offline / "calico.yaml").write_text(CALICO_FIXTURE.read_text())
    digest = hashlib.sha256(CALICO_FIXTURE.read_bytes()).hexdigest()
    dest = tmp_path / "cache/calico.yaml"
    ok = bash_lib(
        f'fetch_calico_manifest "{dest}"',
        LAB_BINARIES=str(offline),
        CALICO_MANIFEST_SHA256=digest,
    )
    assert ok.returncode == 0, ok.stderr
    assert dest.read_bytes() == CALICO_FIXTURE.read_bytes()

    dest.unlink()
    (offline / "calico.yaml").write_text(CALICO_FIXTURE.read_text() + "# tampered\n")
    bad = bash_lib(
        f'fetch_calico_manifest "{dest}"',
        LAB_BINARIES=str(offline),
        CALICO_MANIFEST_SHA256=digest,
    )
    assert bad.returncode != 0
    assert f"checksum mismatch for Calico's calico.yaml: expected {digest}" in bad.stderr
    assert not dest.exists()


def test_fetch_names_the_missing_offline_file(tmp_path: Path) -> None:
    """An offline lab without the manifest gets the file name and the URL to fetch it from."""
    result = bash_lib(f'fetch_calico_manifest "{tmp_path}/x.yaml"', LAB_BINARIES=str(tmp_path))
    assert result.returncode != 0
    assert f"LAB_BINARIES={tmp_path} has no calico.yaml" in result.stderr
    assert "projectcalico/calico/v3.32.2/manifests/calico.yaml" in result.stderr


def test_the_pinned_manifest_and_checksum_belong_together() -> None:
    """The URL carries CALICO_VERSION; the checksum is a SHA-256 (versions.env)."""
    out = bash_lib("calico_manifest_url").stdout.strip()
    assert out == (
        "https://raw.githubusercontent.com/projectcalico/calico/v3.32.2/manifests/calico.yaml"
    )
    assert len(DEFAULTS["CALICO_MANIFEST_SHA256"]) == 64
    int(DEFAULTS["CALICO_MANIFEST_SHA256"], 16)
