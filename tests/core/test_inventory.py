"""Inventory: LIST replaces, watch events patch, only published-relevant changes count."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nodehosts.core.inventory import Inventory, NodeInventory
from nodehosts.core.model import NodeInfo
from nodehosts.testing.fake_apiserver import make_node


def node(name: str, address: str = "10.240.0.101", version: str = "1", **kwargs: Any) -> Any:
    obj = make_node(name, addresses=[address], **kwargs)
    obj["metadata"]["resourceVersion"] = version
    return obj


def heartbeat(obj: Any, version: str, stamp: str = "2030-01-01T00:00:00Z") -> Any:
    beat = copy.deepcopy(obj)
    beat["metadata"]["resourceVersion"] = version
    for condition in beat["status"]["conditions"]:
        condition["lastHeartbeatTime"] = stamp
    return beat


class Rejections:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    def __call__(self, name: str | None, reason: str) -> None:
        self.seen.append((name, reason))


def synced(*objs: Any, version: str = "10", rejected: Rejections | None = None) -> NodeInventory:
    inventory = NodeInventory(rejected=rejected)
    inventory.replace(objs, version)
    return inventory


def test_a_new_inventory_is_empty_unsynced_and_has_no_version():
    """Before the first LIST there is nothing and no version to watch from."""
    inventory = NodeInventory()
    assert dict(inventory.objects) == {}
    assert inventory.resource_version == ""
    assert not inventory.synced


def test_a_list_installs_every_node_by_name_with_the_list_version():
    """replace() keeps the NodeInfo of each listed Node and the list's resourceVersion."""
    inventory = synced(node("worker-1", "10.240.0.101"), node("worker-2", "10.240.0.102"))
    assert sorted(inventory.objects) == ["worker-1", "worker-2"]
    assert inventory.objects["worker-1"].addresses == (
        ("InternalIP", "10.240.0.101"),
        ("Hostname", "worker-1"),
    )
    assert inventory.resource_version == "10"
    assert inventory.synced


def test_a_relist_forgets_nodes_that_are_gone():
    """A relist rebuilds from scratch: nodes deleted while we were not watching disappear."""
    inventory = synced(node("worker-1"), node("worker-2"))
    changed = inventory.replace([node("worker-2")], "20")
    assert changed
    assert list(inventory.objects) == ["worker-2"]
    assert inventory.resource_version == "20"


def test_a_relist_with_the_same_nodes_is_not_a_change_but_moves_the_version():
    """Equal content after a relist reports no change; the new version is still taken."""
    inventory = synced(node("worker-1"))
    assert not inventory.replace([heartbeat(node("worker-1"), "30")], "30")
    assert inventory.resource_version == "30"


def test_a_list_that_fails_midway_leaves_the_inventory_untouched():
    """Pages fetched lazily may fail: the old state and version must survive."""
    inventory = synced(node("worker-1"))
    before = inventory.objects

    def pages() -> Any:
        yield node("worker-9")
        raise ConnectionError("page 2 lost")

    with pytest.raises(ConnectionError):
        inventory.replace(pages(), "99")
    assert inventory.objects == before
    assert inventory.resource_version == "10"


@pytest.mark.parametrize("event_type", ["ADDED", "MODIFIED"])
def test_an_added_or_modified_unknown_node_is_added(event_type: str):
    """ADDED and MODIFIED both upsert (a MODIFIED may arrive for a node we never saw)."""
    inventory = synced()
    assert inventory.apply(event_type, node("worker-3", version="11"))
    assert "worker-3" in inventory.objects
    assert inventory.resource_version == "11"


def test_a_dhcp_address_change_is_a_change():
    """A node whose InternalIP moves is reported as changed, with its new address."""
    inventory = synced(node("worker-1", "10.240.0.101"))
    assert inventory.apply("MODIFIED", node("worker-1", "10.240.0.150", version="11"))
    assert inventory.objects["worker-1"].addresses[0] == ("InternalIP", "10.240.0.150")


def test_a_heartbeat_only_modification_is_not_a_change_but_moves_the_version():
    """Kubelet heartbeats change nothing published: False, and the version still advances."""
    original = node("worker-1", realistic=True)
    inventory = synced(original)
    snapshot = inventory.objects
    assert not inventory.apply("MODIFIED", heartbeat(original, "11"))
    assert inventory.resource_version == "11"
    assert inventory.objects is snapshot


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ready": False}, {"ready": False}),
        ({"unschedulable": True}, {"unschedulable": True}),
        ({"hostname": "worker-1.lab"}, {"hostname": "worker-1.lab"}),
    ],
)
def test_readiness_schedulability_and_hostname_changes_are_changes(change, expected):
    """Everything NodeInfo keeps counts: Ready, unschedulable, the Hostname address."""
    inventory = synced(node("worker-1"))
    assert inventory.apply("MODIFIED", node("worker-1", version="11", **change))
    info = inventory.objects["worker-1"]
    for key, value in expected.items():
        assert getattr(info, key) == value


def test_a_label_change_is_not_a_change():
    """Labels are not published, so relabelling a node is not a change."""
    inventory = synced(node("worker-1"))
    assert not inventory.apply("MODIFIED", node("worker-1", version="11", labels={"x": "y"}))


def test_a_deleted_node_is_removed():
    """DELETED removes the node and reports a change."""
    inventory = synced(node("worker-1"), node("worker-2"))
    assert inventory.apply("DELETED", node("worker-1", version="11"))
    assert list(inventory.objects) == ["worker-2"]
    assert inventory.resource_version == "11"


def test_deleting_an_unknown_node_is_not_a_change():
    """A DELETED for a node we do not hold changes nothing (but moves the version)."""
    inventory = synced(node("worker-1"))
    assert not inventory.apply("DELETED", node("worker-7", version="12"))
    assert inventory.resource_version == "12"


def test_a_bookmark_only_moves_the_version():
    """BOOKMARK carries only metadata.resourceVersion: the version to resume from."""
    inventory = synced(node("worker-1"))
    bookmark = {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}}
    assert not inventory.apply("BOOKMARK", bookmark)
    assert inventory.resource_version == "42"
    assert list(inventory.objects) == ["worker-1"]


def test_an_event_without_a_version_keeps_the_last_one():
    """A version is only ever replaced by a real one."""
    inventory = synced(node("worker-1"))
    obj = node("worker-2")
    del obj["metadata"]["resourceVersion"]
    inventory.apply("ADDED", obj)
    assert inventory.resource_version == "10"


def test_an_unknown_event_type_is_a_caller_error():
    """ERROR events are the watch loop's business, never the inventory's."""
    with pytest.raises(ValueError, match="ERROR"):
        NodeInventory().apply("ERROR", {"kind": "Status", "code": 410})


def test_a_snapshot_never_changes_afterwards_and_is_read_only():
    """Listeners may keep what they were given: later events never show through it."""
    inventory = synced(node("worker-1"))
    snapshot = inventory.objects
    inventory.apply("ADDED", node("worker-2", version="11"))
    inventory.apply("DELETED", node("worker-1", version="12"))
    assert list(snapshot) == ["worker-1"]
    assert sorted(inventory.objects) == ["worker-2"]
    with pytest.raises(TypeError):
        snapshot["worker-3"] = snapshot["worker-1"]  # type: ignore[index]


def test_a_broken_modified_node_is_reported_and_keeps_its_previous_entry():
    """A Node we cannot read is reported, not fatal: we keep publishing what we knew."""
    rejections = Rejections()
    inventory = synced(node("worker-1", "10.240.0.101"), rejected=rejections)
    broken = node("worker-1", version="11")
    broken["status"]["addresses"] = "10.240.0.150"
    assert not inventory.apply("MODIFIED", broken)
    assert inventory.objects["worker-1"].addresses[0] == ("InternalIP", "10.240.0.101")
    assert rejections.seen == [("worker-1", "node worker-1: status.addresses is not a list")]
    assert inventory.rejected == {"worker-1": "node worker-1: status.addresses is not a list"}
    assert inventory.resource_version == "11"


def test_a_broken_node_is_reported_once_until_it_is_fixed():
    """A broken node heartbeating every 10 s is one report, not one per heartbeat."""
    rejections = Rejections()
    inventory = synced(rejected=rejections)
    broken = node("worker-1")
    broken["status"]["addresses"] = "10.240.0.150"
    for version in ("11", "12", "13"):
        inventory.apply("MODIFIED", heartbeat(broken, version))
    assert len(rejections.seen) == 1
    assert inventory.apply("MODIFIED", node("worker-1", version="14"))
    assert inventory.rejected == {}
    inventory.apply("MODIFIED", heartbeat(broken, "15"))
    assert len(rejections.seen) == 2


def test_a_broken_node_in_a_list_keeps_its_previous_entry_and_skips_new_ones():
    """In a relist, an unreadable known node keeps its old value; an unknown one is left out."""
    rejections = Rejections()
    inventory = synced(node("worker-1", "10.240.0.101"), rejected=rejections)
    broken_known = node("worker-1", "10.240.0.199")
    broken_known["status"]["addresses"] = [42]
    broken_new = node("worker-2")
    broken_new["spec"] = "nope"
    inventory.replace([broken_known, broken_new, node("worker-3")], "20")
    assert sorted(inventory.objects) == ["worker-1", "worker-3"]
    assert inventory.objects["worker-1"].addresses[0] == ("InternalIP", "10.240.0.101")
    assert sorted(name for name, _ in rejections.seen) == ["worker-1", "worker-2"]


def test_objects_without_a_name_are_reported_and_ignored():
    """A nameless object cannot be stored or deleted; it is reported under None."""
    rejections = Rejections()
    inventory = synced(rejected=rejections)
    assert not inventory.apply("ADDED", {"metadata": {"resourceVersion": "11"}})
    assert not inventory.apply("DELETED", {"metadata": {"resourceVersion": "12"}})
    assert not inventory.apply("ADDED", "not an object")
    assert [name for name, _ in rejections.seen] == [None, None, None]
    assert len(inventory) == 0


def test_a_deleted_broken_node_is_removed_by_name():
    """DELETED needs only metadata.name: a node broken in every other way still goes."""
    inventory = synced(node("worker-1"))
    assert inventory.apply("DELETED", {"metadata": {"name": "worker-1", "resourceVersion": "11"}})
    assert len(inventory) == 0


def test_an_inventory_is_generic_over_what_its_parser_keeps():
    """Other collections (e.g. CSRs) reuse the same state with their own parser."""

    def parse(obj: Any) -> tuple[str, str]:
        spec = obj.get("spec") or {}
        if "signerName" not in spec:
            raise ValueError("no signerName")
        return obj["metadata"]["name"], spec["signerName"]

    rejections = Rejections()
    inventory: Inventory[tuple[str, str]] = Inventory(parse, rejected=rejections)
    csr = {"metadata": {"name": "csr-1", "resourceVersion": "5"}, "spec": {"signerName": "x"}}
    inventory.replace([csr, {"metadata": {"name": "csr-2"}, "spec": {}}], "5")
    assert dict(inventory.objects) == {"csr-1": ("csr-1", "x")}
    assert rejections.seen == [("csr-2", "no signerName")]


def test_only_the_declared_errors_count_as_bad_objects():
    """A parser bug (any other exception) propagates instead of being reported as bad data."""

    def parse(obj: Any) -> NodeInfo:
        raise KeyError("bug")

    inventory: Inventory[NodeInfo] = Inventory(parse, errors=(ValueError,))
    with pytest.raises(KeyError):
        inventory.apply("ADDED", node("worker-1"))


def test_a_snapshot_names_what_changed_since_the_snapshot_before_it():
    """Issue 16: a consumer that saw the previous snapshot updates only the names the next one
    says changed; it learns nothing from a snapshot further back, nor after a LIST."""
    inventory = synced(node("worker-1"), node("worker-2"), node("worker-3"))
    first = inventory.objects
    assert first.changed_since({}) is None
    assert inventory.apply("MODIFIED", node("worker-1", "10.240.0.150", version="11"))
    assert not inventory.apply("MODIFIED", heartbeat(node("worker-2"), "12"))
    assert inventory.apply("DELETED", node("worker-3", version="13"))
    assert inventory.apply("ADDED", node("worker-4", version="14"))
    second = inventory.objects
    assert second.changed_since(first) == {"worker-1", "worker-3", "worker-4"}
    assert inventory.objects is second  # nothing changed: the same snapshot
    assert inventory.apply("MODIFIED", node("worker-4", "10.240.0.160", version="15"))
    third = inventory.objects
    assert third.changed_since(second) == {"worker-4"}
    assert third.changed_since(first) is None  # skipped one: the caller must compare all
    inventory.replace([node("worker-1")], "20")
    assert inventory.objects.changed_since(third) is None
    with pytest.raises(TypeError):
        third["worker-1"] = third["worker-2"]  # type: ignore[index]
    assert sorted(third) == ["worker-1", "worker-2", "worker-4"]


def test_snapshots_keep_their_moment_through_many_events_and_new_bases():
    """Snapshots share a base and carry only the changes since it: through adds, changes and
    deletes (names deleted and added again, more changes than a base is kept for), each
    snapshot reads exactly the objects of its moment, however the inventory moves on."""
    import random

    rng = random.Random(7)
    inventory = Inventory(lambda obj: obj["v"], errors=(KeyError,))
    names = [f"n{i}" for i in range(150)]
    inventory.replace([{"metadata": {"name": n}, "v": 0} for n in names[:100]], "1")
    model = dict.fromkeys(names[:100], 0)
    taken: list[tuple[Any, dict[str, int]]] = []
    for step in range(1, 1500):
        name = rng.choice(names)
        if rng.random() < 0.25:
            inventory.apply("DELETED", {"metadata": {"name": name}})
            model.pop(name, None)
        else:
            inventory.apply("MODIFIED", {"metadata": {"name": name}, "v": step})
            model[name] = step
        if rng.random() < 0.5:
            taken.append((inventory.objects, dict(model)))
    assert len(taken) > 500
    for snapshot, then in taken:
        assert dict(snapshot) == then
        assert len(snapshot) == len(then)
        assert sorted(snapshot) == sorted(then)
        assert sorted(snapshot.values()) == sorted(then.values())
        assert all((n in snapshot) == (n in then) for n in names)
        assert all(snapshot.get(n) == then.get(n) for n in names)
