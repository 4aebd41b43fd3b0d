"""Kubernetes object JSON as the API serves it, for tests, benchmarks and the demo.

Contract: `make_node(name, addresses=...)` is a Node as a kubelet reports it: its addresses (a
`Hostname` address appended unless one is given), `kubernetes.io/hostname`/`os` labels, a Ready
condition, an unschedulable taint when asked. `realistic=True` adds what a real kubelet's Node
carries (~10 KB: 30 images, managedFields, labels, nodeInfo, conditions with heartbeats),
deterministic per name (only the timestamps move), so benchmarks parse what a cluster sends.
`timestamp()` is the API's time format.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["AddressSpec", "make_node", "timestamp"]

Json = dict[str, Any]
AddressSpec = Sequence[tuple[str, str]] | Sequence[str]


def timestamp() -> str:
    """Now, as the API writes times (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_node(
    name: str,
    *,
    addresses: AddressSpec,
    hostname: str | None = None,
    ready: bool | None = True,
    unschedulable: bool = False,
    labels: Mapping[str, str] | None = None,
    realistic: bool = False,
) -> Json:
    """Node JSON as a kubelet reports it.

    `addresses`: (type, address) pairs, or bare strings meaning InternalIP. A `Hostname` address
    (`hostname`, default the node name; "" for none) is appended unless one is given. `ready`:
    the Ready condition's status (None: no Ready condition). `realistic`: see the module.
    """
    node: Json = {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": _labels(name, labels, realistic)},
        "spec": _unschedulable_spec() if unschedulable else {},
        "status": {
            "addresses": _addresses(name, addresses, hostname),
            "conditions": _conditions(ready, realistic),
        },
    }
    if realistic:
        _add_realistic_parts(node, name)
    return node


# --------------------------------------------------------------------------- what every Node has


def _addresses(name: str, addresses: AddressSpec, hostname: str | None) -> list[Json]:
    pairs = [("InternalIP", a) if isinstance(a, str) else (a[0], a[1]) for a in addresses]
    if not any(kind == "Hostname" for kind, _ in pairs):
        host = name if hostname is None else hostname
        if host:
            pairs.append(("Hostname", host))
    return [{"type": kind, "address": value} for kind, value in pairs]


def _labels(name: str, extra: Mapping[str, str] | None, realistic: bool) -> dict[str, str]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if realistic:
        labels.update(_realistic_labels(name))
    labels.update(extra or {})
    return labels


def _unschedulable_spec() -> Json:
    """What `kubectl cordon` leaves: the flag and the taint the node controller adds."""
    return {
        "unschedulable": True,
        "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
    }


def _condition(kind: str, status: str, reason: str, message: str, stamp: str) -> Json:
    return {
        "type": kind,
        "status": status,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


# The pressure conditions a healthy kubelet reports (realistic Nodes only).
_PRESSURES = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


def _conditions(ready: bool | None, realistic: bool) -> list[Json]:
    stamp = timestamp()
    conditions = []
    if realistic:
        conditions.append(
            _condition(
                "NetworkUnavailable", "False", "CalicoIsUp", "Calico is running on this node", stamp
            )
        )
        for kind, reason, message in _PRESSURES:
            conditions.append(_condition(kind, "False", reason, message, stamp))
    if ready is not None:
        if ready:
            conditions.append(
                _condition(
                    "Ready", "True", "KubeletReady", "kubelet is posting ready status", stamp
                )
            )
        else:
            conditions.append(
                _condition(
                    "Ready",
                    "False",
                    "KubeletNotReady",
                    "container runtime network not ready",
                    stamp,
                )
            )
    return conditions


# --------------------------------------------------------------------------- realistic Nodes


def _digest(*parts: str) -> str:
    """A stable pseudo-random hex string per name: the same Node every run."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _realistic_labels(name: str) -> dict[str, str]:
    return {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "vbox-2c-1g",
        "node.kubernetes.io/role": "worker",
        "topology.kubernetes.io/region": "lab",
        "topology.kubernetes.io/zone": f"lab-{int(_digest(name)[:2], 16) % 3}",
    }


_IMAGES = [
    "docker.io/calico/node:v3.27.3",
    "docker.io/calico/cni:v3.27.3",
    "docker.io/calico/kube-controllers:v3.27.3",
    "registry.k8s.io/kube-proxy:v1.30.2",
    "registry.k8s.io/pause:3.9",
    "registry.k8s.io/coredns/coredns:v1.11.1",
    "registry.k8s.io/metrics-server/metrics-server:v0.7.1",
    "registry.k8s.io/ingress-nginx/controller:v1.10.1",
    "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.10.1",
    "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
    "quay.io/prometheus/node-exporter:v1.8.1",
    "quay.io/prometheus/prometheus:v2.53.0",
    "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0",
    "docker.io/grafana/grafana:11.1.0",
    "docker.io/grafana/promtail:3.0.0",
    "docker.io/grafana/loki:3.0.0",
    "docker.io/library/nginx:1.27.0",
    "docker.io/library/redis:7.2.5",
    "docker.io/library/postgres:16.3",
    "docker.io/library/busybox:1.36.1",
    "docker.io/library/alpine:3.20.1",
    "docker.io/bitnami/kubectl:1.30.2",
    "ghcr.io/fluxcd/source-controller:v1.3.0",
    "ghcr.io/fluxcd/kustomize-controller:v1.3.0",
    "ghcr.io/fluxcd/helm-controller:v1.0.1",
    "quay.io/jetstack/cert-manager-controller:v1.15.1",
    "quay.io/jetstack/cert-manager-webhook:v1.15.1",
    "quay.io/jetstack/cert-manager-cainjector:v1.15.1",
    "docker.io/traefik:v3.0.4",
    "docker.io/rancher/local-path-provisioner:v0.0.28",
]

_RESOURCES = {
    "cpu": "2",
    "ephemeral-storage": "40901312Ki",
    "hugepages-1Gi": "0",
    "hugepages-2Mi": "0",
    "memory": "1004852Ki",
    "pods": "110",
}


def _first_address(node: Json) -> str:
    for address in node["status"]["addresses"]:
        if address["type"] == "InternalIP":
            return str(address["address"])
    return "10.240.0.1"


def _add_realistic_parts(node: Json, name: str) -> None:
    """Fill in what a kubelet, kubeadm, the controller manager and Calico add to a Node."""
    index = int(_digest(name)[:4], 16) % 250
    stamp = timestamp()
    _add_realistic_metadata(node, name, index)
    _add_realistic_spec(node, name, index)
    _add_realistic_status(node, name)
    node["metadata"]["managedFields"] = _managed_fields(node, stamp)


def _add_realistic_metadata(node: Json, name: str, index: int) -> None:
    metadata = node["metadata"]
    metadata["uid"] = str(uuid.UUID(_digest("uid", name)[:32]))
    metadata["creationTimestamp"] = "2024-06-01T10:00:00Z"
    metadata["annotations"] = {
        "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
        "node.alpha.kubernetes.io/ttl": "0",
        "projectcalico.org/IPv4Address": f"{_first_address(node)}/24",
        "projectcalico.org/IPv4IPIPTunnelAddr": f"10.200.{index}.0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }


def _add_realistic_spec(node: Json, name: str, index: int) -> None:
    spec = node["spec"]
    spec["podCIDR"] = f"10.200.{index}.0/24"
    spec["podCIDRs"] = [f"10.200.{index}.0/24"]
    spec["providerID"] = f"vbox://{_digest('vm', name)[:36]}"


def _add_realistic_status(node: Json, name: str) -> None:
    status = node["status"]
    status["capacity"] = dict(_RESOURCES)
    status["allocatable"] = {**_RESOURCES, "ephemeral-storage": "37694649077", "memory": "902452Ki"}
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
    status["nodeInfo"] = {
        "machineID": _digest("machine", name)[:32],
        "systemUUID": str(uuid.UUID(_digest("system", name)[:32])),
        "bootID": str(uuid.UUID(_digest("boot", name)[:32])),
        "kernelVersion": "6.1.0-21-amd64",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "containerRuntimeVersion": "containerd://1.7.18",
        "kubeletVersion": "v1.30.2",
        "kubeProxyVersion": "v1.30.2",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
    status["images"] = [
        {
            "names": [f"{image.split(':')[0]}@sha256:{_digest(image)}", image],
            "sizeBytes": 1_000_000 + int(_digest("size", image)[:7], 16),
        }
        for image in _IMAGES
    ]
    status["volumesInUse"] = []


def _managed_field(manager: str, time: str, fields: Json, subresource: str = "") -> Json:
    entry: Json = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": "v1",
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _managed_fields(node: Json, stamp: str) -> list[Json]:
    """Server-side apply's bookkeeping: which writer owns which field (a large part of a Node)."""
    metadata, spec, status = node["metadata"], node["spec"], node["status"]
    kubeadm: Json = {
        "f:metadata": {
            "f:annotations": {
                "f:kubeadm.alpha.kubernetes.io/cri-socket": {},
                "f:node.alpha.kubernetes.io/ttl": {},
            }
        }
    }
    controller_manager: Json = {
        "f:spec": {"f:podCIDR": {}, "f:podCIDRs": {".": {}, f'v:"{spec["podCIDR"]}"': {}}}
    }
    calico: Json = {
        "f:metadata": {
            "f:annotations": {
                "f:projectcalico.org/IPv4Address": {},
                "f:projectcalico.org/IPv4IPIPTunnelAddr": {},
            }
        },
        "f:status": {"f:conditions": {'k:{"type":"NetworkUnavailable"}': {".": {}}}},
    }
    condition_fields: Json = {
        ".": {},
        "f:lastHeartbeatTime": {},
        "f:lastTransitionTime": {},
        "f:message": {},
        "f:reason": {},
        "f:status": {},
        "f:type": {},
    }
    kubelet: Json = {
        "f:metadata": {
            "f:annotations": {
                ".": {},
                "f:volumes.kubernetes.io/controller-managed-attach-detach": {},
            },
            "f:labels": {".": {}, **{f"f:{k}": {} for k in sorted(metadata["labels"])}},
        },
        "f:spec": {"f:providerID": {}},
        "f:status": {
            "f:allocatable": {f"f:{k}": {} for k in sorted(_RESOURCES)},
            "f:capacity": {f"f:{k}": {} for k in sorted(_RESOURCES)},
            "f:conditions": {
                f'k:{{"type":"{c["type"]}"}}': dict(condition_fields) for c in status["conditions"]
            },
            "f:daemonEndpoints": {"f:kubeletEndpoint": {"f:Port": {}}},
            "f:images": {},
            "f:nodeInfo": {f"f:{k}": {} for k in sorted(status["nodeInfo"])},
        },
    }
    return [
        _managed_field("kubeadm", "2024-06-01T10:00:00Z", kubeadm),
        _managed_field("kube-controller-manager", "2024-06-01T10:00:10Z", controller_manager),
        _managed_field("calico-node", "2024-06-01T10:01:00Z", calico, "status"),
        _managed_field("kubelet", stamp, kubelet, "status"),
    ]
