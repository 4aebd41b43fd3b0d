"""What a kubelet sends the apiserver about its Node, as plain JSON for a real apiserver.

Contract: `node_object(name, address, labels=...)` is the Node a kubelet registers (POST
/api/v1/nodes with its status: an InternalIP, a Hostname address equal to the name, a Ready
condition); `address_patch(address, name)` and `heartbeat_patch()` are merge patches for
`/api/v1/nodes/NAME/status` (a new DHCP lease; a heartbeat that changes only timestamps).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

__all__ = ["address_patch", "heartbeat_patch", "node_object"]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready() -> list[dict[str, str]]:
    now = _now()
    return [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
    ]


def node_object(
    name: str, address: str, *, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "conditions": _ready(),
        },
    }


def address_patch(address: str, name: str) -> dict[str, Any]:
    return {
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ]
        }
    }


def heartbeat_patch() -> dict[str, Any]:
    return {"status": {"conditions": _ready()}}
