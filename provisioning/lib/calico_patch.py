#!/usr/bin/env python3
"""The lab's changes to upstream's manifests/calico.yaml, applied by structure, never by text.

    python3 calico_patch.py --version v3.32.2 --node-cidr 10.240.0.0/24 \
        --pod-cidr 10.200.0.0/16 --api-host 10.240.0.40 --api-port 6443 <calico.yaml >out.yaml

What changes, and why (everything else is upstream's, CRDs and RBAC included):

1. CNI IPAM: host-local with "subnet": "usePodCidr" instead of calico-ipam, so every pod gets
   an address from its node's podCIDR (kube-controller-manager --allocate-node-cidrs), and
   calico-node advertises those /24s by BGP (USE_POD_CIDR=true).
2. The upgrade-ipam init container goes: whenever host-local's allocations exist
   (/var/lib/cni/networks/k8s-pod-network, which host-local IPAM fills) it marks the Calico
   datastore not ready, deletes the calico and host-local CNI binaries and moves the
   allocations into calico-ipam (cni-plugin/pkg/upgrade/migrate.go): a calico-node restart
   would take the node's pod network down.
3. The node address is autodetected inside the node network (IP_AUTODETECTION_METHOD
   cidr=...): every VirtualBox VM has the same NAT address 10.0.2.15 on its first interface.
4. The pool is the cluster's pod range (CALICO_IPV4POOL_CIDR), without IP-in-IP (all nodes
   share one L2 network; VXLAN is already off upstream).
5. A kubernetes-services-endpoint ConfigMap (upstream references it, optional): calico-node and
   the CNI plugin reach the apiserver through the LB, because the service IP works only once
   kube-proxy runs, and kube-proxy's pods need the CNI.

Anything not shaped as expected is an error naming what is missing: a Calico release that
moves things must be looked at, not patched half-way. Needs only python3 and python3-yaml.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

import yaml

Doc = dict[str, Any]

CNI_MTU_PLACEHOLDER = "__CNI_MTU__"  # not JSON: upstream's installer substitutes it
MTU_SENTINEL = 987654321


class ShapeError(Exception):
    """The manifest is not shaped like the Calico release this step was written for."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise ShapeError(what)


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
    expect(len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}")
    return found[0]


def container(containers: list[Doc], name: str, where: str) -> Doc:
    found = [c for c in containers if c.get("name") == name]
    expect(len(found) == 1, f"expected one container {name} in {where}, found {len(found)}")
    return found[0]


def set_env(env: list[Doc], name: str, value: str, *, after: str | None = None) -> None:
    """Set NAME's value; a new variable goes right after AFTER (which must exist)."""
    for item in env:
        if item.get("name") == name:
            expect("valueFrom" not in item, f"calico-node env {name} is taken from elsewhere")
            item["value"] = value
            return
    expect(after is not None, f"calico-node has no env {name}")
    index = next((i for i, item in enumerate(env) if item.get("name") == after), None)
    expect(index is not None, f"calico-node has no env {after}")
    env.insert(index + 1, {"name": name, "value": value})  # type: ignore[operator]


def env_value(env: list[Doc], name: str) -> Any:
    item = next((e for e in env if e.get("name") == name), None)
    expect(item is not None, f"calico-node has no env {name}")
    return item.get("value")  # type: ignore[union-attr]


def patch_cni_config(config_map: Doc) -> None:
    data = config_map.get("data") or {}
    template = data.get("cni_network_config")
    expect(isinstance(template, str), "calico-config has no data.cni_network_config")
    expect(
        template.count(CNI_MTU_PLACEHOLDER) == 1, f"cni_network_config: no {CNI_MTU_PLACEHOLDER}"
    )
    try:
        cni = json.loads(template.replace(CNI_MTU_PLACEHOLDER, str(MTU_SENTINEL)))
    except json.JSONDecodeError as error:
        raise ShapeError(f"cni_network_config is not JSON: {error}") from error
    plugins = cni.get("plugins") or []
    calico = [p for p in plugins if p.get("type") == "calico"]
    expect(len(calico) == 1, "cni_network_config: expected one plugin of type calico")
    ipam = calico[0].get("ipam")
    expect(
        ipam == {"type": "calico-ipam"},
        f"cni_network_config: expected ipam calico-ipam, found {ipam!r}",
    )
    calico[0]["ipam"] = {"type": "host-local", "subnet": "usePodCidr"}
    text = json.dumps(cni, indent=2)
    data["cni_network_config"] = text.replace(str(MTU_SENTINEL), CNI_MTU_PLACEHOLDER)


def patch_calico_node(daemonset: Doc, node_cidr: str, pod_cidr: str) -> None:
    spec = daemonset.get("spec", {}).get("template", {}).get("spec", {})
    init = spec.get("initContainers") or []
    container(init, "install-cni", "calico-node's initContainers")
    upgrade = container(init, "upgrade-ipam", "calico-node's initContainers")
    init.remove(upgrade)
    # Its volume (the host-local allocations it migrated) is mounted by nothing else.
    containers = init + spec.get("containers", [])
    mounted = {m.get("name") for c in containers for m in c.get("volumeMounts", [])}
    spec["volumes"] = [v for v in spec.get("volumes", []) if v.get("name") in mounted]
    node = container(spec.get("containers") or [], "calico-node", "the calico-node DaemonSet")
    refs = [e.get("configMapRef", {}).get("name") for e in node.get("envFrom") or []]
    expect(
        "kubernetes-services-endpoint" in refs,
        "calico-node does not read the kubernetes-services-endpoint ConfigMap",
    )
    env = node.get("env")
    expect(isinstance(env, list), "calico-node has no env list")
    expect(env_value(env, "IP") == "autodetect", "calico-node env IP is not autodetect")
    expect(env_value(env, "CALICO_IPV4POOL_VXLAN") == "Never", "CALICO_IPV4POOL_VXLAN is not Never")
    set_env(env, "IP_AUTODETECTION_METHOD", f"cidr={node_cidr}", after="IP")
    set_env(env, "USE_POD_CIDR", "true", after="IP_AUTODETECTION_METHOD")
    set_env(env, "CALICO_IPV4POOL_CIDR", pod_cidr, after="USE_POD_CIDR")
    set_env(env, "CALICO_IPV4POOL_IPIP", "Never")


def check_images(docs: list[Doc], version: str) -> None:
    """Every Calico image is the pinned release: the file is the one we meant to patch."""
    images = []
    for doc in docs:
        if doc.get("kind") in ("DaemonSet", "Deployment"):
            spec = doc["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                images.append(c.get("image", ""))
    expect(bool(images), "no containers at all")
    wrong = [i for i in images if not i.endswith(f":{version}")]
    expect(not wrong, f"images not of Calico {version}: {', '.join(sorted(set(wrong)))}")


def services_endpoint(api_host: str, api_port: int) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kubernetes-services-endpoint", "namespace": "kube-system"},
        "data": {"KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": str(api_port)},
    }


def patch(
    docs: list[Doc], *, version: str, node_cidr: str, pod_cidr: str, api_host: str, api_port: int
) -> list[Doc]:
    """The patched documents: upstream's, in upstream's order, plus the endpoint ConfigMap."""
    docs = [d for d in docs if d]
    check_images(docs, version)
    find(docs, "Deployment", "calico-kube-controllers")
    expect(
        not any(d.get("metadata", {}).get("name") == "kubernetes-services-endpoint" for d in docs),
        "upstream now defines kubernetes-services-endpoint itself",
    )
    patch_cni_config(find(docs, "ConfigMap", "calico-config"))
    patch_calico_node(find(docs, "DaemonSet", "calico-node"), node_cidr, pod_cidr)
    index = docs.index(find(docs, "ConfigMap", "calico-config"))
    docs.insert(index, services_endpoint(api_host, api_port))
    return docs


class Dumper(yaml.SafeDumper):
    """Multi-line strings (the CNI config) as literal blocks, readable in the output."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the Calico release, e.g. v3.32.2")
    parser.add_argument("--node-cidr", required=True, type=ipaddress.IPv4Network)
    parser.add_argument("--pod-cidr", required=True, type=ipaddress.IPv4Network)
    parser.add_argument("--api-host", required=True)
    parser.add_argument("--api-port", type=int, default=6443)
    args = parser.parse_args(argv)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 350 kB in a second
    try:
        docs = list(yaml.load_all(sys.stdin, Loader=loader))
        patched = patch(
            docs,
            version=args.version,
            node_cidr=str(args.node_cidr),
            pod_cidr=str(args.pod_cidr),
            api_host=args.api_host,
            api_port=args.api_port,
        )
    except (ShapeError, yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        print(
            f"calico_patch: the Calico manifest is not shaped as expected: {error}\n"
            "  (another Calico release? check CALICO_VERSION and CALICO_MANIFEST_SHA256 in"
            " versions.env and review provisioning/lib/calico_patch.py)",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(f"# Calico {args.version} from upstream's manifests/calico.yaml, patched by\n")
    sys.stdout.write("# provisioning/lib/calico_patch.py (host-local IPAM, node address, pool).\n")
    yaml.dump_all(patched, sys.stdout, Dumper=Dumper, sort_keys=False, width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
