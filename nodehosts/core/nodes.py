"""Raw Node JSON -> `NodeInfo`: the one place that reads the API's Node shape.

Contract: takes the decoded JSON object of a Node (as the API sends it, never a client model)
and returns a `NodeInfo`, or raises `BadNode` with a message saying what is wrong. Fields
nodehosts does not publish are never looked at, so a Node missing optional fields (nodeInfo,
images, ...) is fine.
"""

from __future__ import annotations

from typing import Any

from nodehosts.core.model import NodeInfo


class BadNode(ValueError):
    """A Node object that cannot be read; the message names the field."""


def node_from_json(obj: Any) -> NodeInfo:
    """Extract what nodehosts publishes from one Node object."""
    if not isinstance(obj, dict):
        raise BadNode(f"node is not an object: {type(obj).__name__}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise BadNode("node has no metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise BadNode("node has no metadata.name")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not isinstance(spec, dict) or not isinstance(status, dict):
        raise BadNode(f"node {name}: spec or status is not an object")

    addresses: list[tuple[str, str]] = []
    raw_addresses = status.get("addresses") or []
    if not isinstance(raw_addresses, list):
        raise BadNode(f"node {name}: status.addresses is not a list")
    for entry in raw_addresses:
        if not isinstance(entry, dict):
            raise BadNode(f"node {name}: status.addresses has a non-object entry")
        kind, value = entry.get("type"), entry.get("address")
        if not isinstance(kind, str) or not isinstance(value, str):
            raise BadNode(f"node {name}: status.addresses entry without type or address")
        addresses.append((kind, value))

    ready: bool | None = None
    conditions = status.get("conditions") or []
    if isinstance(conditions, list):
        for condition in conditions:
            if isinstance(condition, dict) and condition.get("type") == "Ready":
                ready = condition.get("status") == "True"
                break

    return NodeInfo(
        name=name,
        addresses=tuple(addresses),
        ready=ready,
        unschedulable=spec.get("unschedulable") is True,
    )


def hostname_from_json(obj: Any) -> str | None:
    """The first `Hostname` address of one Node object (None: none), checked as
    `node_from_json` checks it: all the record policy needs of a Node outside the label
    selection. An `Inventory(hostname_from_json)` of every Node (no selector) has as its
    `objects` exactly `build_publication`'s `hidden` (name -> Hostname), and keeps that
    mapping object while no name or Hostname changes (heartbeats change neither)."""
    return node_from_json(obj).hostname
