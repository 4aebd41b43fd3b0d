"""Raw Node JSON -> NodeInfo: what is kept, what is tolerated, what is refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nodehosts.core.inventory import Inventory
from nodehosts.core.model import NodeInfo
from nodehosts.core.nodes import BadNode, hostname_from_json, node_from_json

# Trimmed from a real kubelet-registered Node: what nodehosts ignores is there on purpose.
WORKER: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "worker-0",
        "resourceVersion": "123456",
        "labels": {"kubernetes.io/hostname": "worker-0", "node.kubernetes.io/role": "worker"},
        "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        "managedFields": [{"manager": "kubelet", "operation": "Update"}],
    },
    "spec": {"podCIDR": "10.200.1.0/24", "podCIDRs": ["10.200.1.0/24"]},
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "10.240.0.101"},
            {"type": "Hostname", "address": "worker-0"},
        ],
        "conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
        ],
        "images": [{"names": ["registry.k8s.io/pause:3.9"], "sizeBytes": 321520}],
        "nodeInfo": {"kubeletVersion": "v1.30.0"},
    },
}


def worker(**changes: Any) -> dict[str, Any]:
    """A deep copy of WORKER with top-level sections replaced."""
    obj = copy.deepcopy(WORKER)
    obj.update(changes)
    return obj


def test_a_real_node_gives_its_name_addresses_and_state() -> None:
    """Only what nodehosts publishes survives the parsing boundary."""
    assert node_from_json(WORKER) == NodeInfo(
        name="worker-0",
        addresses=(("InternalIP", "10.240.0.101"), ("Hostname", "worker-0")),
        ready=True,
        unschedulable=False,
    )


def test_addresses_keep_api_order_and_text_exactly() -> None:
    """Validation is the record policy's job, so a bad address is reported per node."""
    info = node_from_json(
        worker(
            status={
                "addresses": [
                    {"type": "ExternalIP", "address": "fe80::1%eth0"},
                    {"type": "InternalIP", "address": "not an ip"},
                    {"type": "Hostname", "address": "Worker-0"},
                ]
            }
        )
    )
    assert info.addresses == (
        ("ExternalIP", "fe80::1%eth0"),
        ("InternalIP", "not an ip"),
        ("Hostname", "Worker-0"),
    )
    assert info.hostname == "Worker-0"


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"metadata": {"name": "bare"}}, id="no-spec-no-status"),
        pytest.param({"metadata": {"name": "bare"}, "spec": None, "status": None}, id="nulls"),
        pytest.param({"metadata": {"name": "bare"}, "spec": {}, "status": {}}, id="empty"),
        pytest.param(
            {"metadata": {"name": "bare"}, "status": {"addresses": None, "conditions": None}},
            id="null-lists",
        ),
    ],
)
def test_a_node_missing_optional_fields_is_fine(obj: dict[str, Any]) -> None:
    """A freshly registered Node has no addresses or conditions yet: not an error."""
    info = node_from_json(obj)
    assert info == NodeInfo(name="bare", addresses=(), ready=None, unschedulable=False)
    assert info.hostname is None


@pytest.mark.parametrize(
    ("conditions", "ready"),
    [
        ([{"type": "Ready", "status": "True"}], True),
        ([{"type": "Ready", "status": "False"}], False),
        ([{"type": "Ready", "status": "Unknown"}], False),
        ([{"type": "MemoryPressure", "status": "True"}], None),
        ([], None),
        ("not a list", None),
        ([None, {"type": "Ready", "status": "True"}], True),
    ],
)
def test_ready_comes_from_the_ready_condition(conditions: Any, ready: bool | None) -> None:
    """True/False when reported (Unknown counts as not ready), None when not reported."""
    assert node_from_json(worker(status={"conditions": conditions})).ready is ready


@pytest.mark.parametrize(
    ("spec", "unschedulable"),
    [
        ({"unschedulable": True}, True),
        ({"unschedulable": False}, False),
        ({}, False),
        ({"unschedulable": "true"}, False),
    ],
)
def test_unschedulable_is_true_only_for_a_cordoned_node(
    spec: dict[str, Any], unschedulable: bool
) -> None:
    """Only the JSON boolean true means cordoned."""
    assert node_from_json(worker(spec=spec)).unschedulable is unschedulable


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        pytest.param([], "object", id="a-list"),
        pytest.param(None, "object", id="null"),
        pytest.param("worker-0", "object", id="a-string"),
        pytest.param({}, "metadata", id="no-metadata"),
        pytest.param({"metadata": "worker-0"}, "metadata", id="metadata-not-object"),
        pytest.param({"metadata": {}}, "metadata.name", id="no-name"),
        pytest.param({"metadata": {"name": ""}}, "metadata.name", id="empty-name"),
        pytest.param({"metadata": {"name": 7}}, "metadata.name", id="name-not-string"),
        pytest.param(worker(spec="x"), "spec", id="spec-not-object"),
        pytest.param(worker(status=["x"]), "status", id="status-not-object"),
        pytest.param(
            worker(status={"addresses": {"type": "InternalIP"}}),
            "status.addresses",
            id="addresses-not-list",
        ),
        pytest.param(
            worker(status={"addresses": ["10.0.0.1"]}),
            "status.addresses",
            id="address-entry-not-object",
        ),
        pytest.param(
            worker(status={"addresses": [{"address": "10.0.0.1"}]}),
            "status.addresses",
            id="address-without-type",
        ),
        pytest.param(
            worker(status={"addresses": [{"type": "InternalIP", "address": None}]}),
            "status.addresses",
            id="address-null",
        ),
    ],
)
def test_a_broken_node_raises_bad_node_naming_the_field(obj: Any, field: str) -> None:
    """The message says which field is wrong, so one line in the log is enough."""
    with pytest.raises(BadNode, match=field.replace(".", r"\.")):
        node_from_json(obj)


def test_a_broken_node_after_the_name_is_reported_with_its_name() -> None:
    """Once the name is known, the message says which node it is."""
    with pytest.raises(BadNode, match="worker-0"):
        node_from_json(worker(status={"addresses": "x"}))


def test_bad_node_is_a_value_error() -> None:
    """Callers catching ValueError for bad input also catch BadNode."""
    assert issubclass(BadNode, ValueError)


def test_the_lean_view_of_a_node_outside_the_selection_is_its_hostname() -> None:
    """An inventory of every Node keeping only Hostnames is the record policy's `hidden`: the
    same mapping object through heartbeats, a new one when a Hostname changes."""
    inventory = Inventory(hostname_from_json, errors=(BadNode,))
    inventory.replace([WORKER, worker(metadata={"name": "worker-1"}, status={})], "1")
    hidden = inventory.objects
    assert hidden == {"worker-0": "worker-0", "worker-1": None}
    heartbeat = worker(metadata={**WORKER["metadata"], "resourceVersion": "123457"})
    heartbeat["status"]["conditions"][0]["status"] = "True"
    assert not inventory.apply("MODIFIED", heartbeat)
    assert inventory.objects is hidden
    renamed = worker(status={"addresses": [{"type": "Hostname", "address": "controller-0"}]})
    assert inventory.apply("MODIFIED", renamed)
    assert inventory.objects == {"worker-0": "controller-0", "worker-1": None}
    with pytest.raises(BadNode, match=r"status\.addresses"):
        hostname_from_json(worker(status={"addresses": "x"}))
