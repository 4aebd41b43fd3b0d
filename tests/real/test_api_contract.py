"""The list/watch behaviours the fake API server (nodehosts/testing/fake_apiserver/) claims to
model, checked with the same assertions against the real kube-apiserver and against the fake:
LIST paging with limit/continue (and remainingItemCount), continue tokens expiring with
compaction, 410 for a too-old watch version, bookmarks, timeoutSeconds, label and field
selectors on LIST and WATCH. A difference makes one of the two parameters fail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.controlplane import Api, ControlPlane
from tests.helpers.kubelet import node_object

pytestmark = pytest.mark.real_cluster

NODES = "/api/v1/nodes"
TOKEN = "contract"


class Cluster:
    """The writes a test needs, on the real apiserver (admin) or the fake (in process)."""

    name: str
    api: Api

    def create(self, name: str, labels: dict[str, str]) -> str:
        raise NotImplementedError

    def relabel(self, name: str, labels: dict[str, str]) -> str:
        raise NotImplementedError

    def compact(self) -> None:
        raise NotImplementedError


class Real(Cluster):
    name = "real"

    def __init__(self, plane: ControlPlane) -> None:
        self.plane, self.api = plane, plane.admin

    def create(self, name: str, labels: dict[str, str]) -> str:
        node = self.api.post(NODES, node_object(name, "10.241.0.1", labels=labels)).ok()
        return str(node["metadata"]["resourceVersion"])

    def relabel(self, name: str, labels: dict[str, str]) -> str:
        node = self.api.patch(f"{NODES}/{name}", {"metadata": {"labels": labels}}).ok()
        return str(node["metadata"]["resourceVersion"])

    def compact(self) -> None:
        """etcd compaction, then a new apiserver: kube-apiserver 1.36 serves watches and
        continue pages from its watch cache (with its list snapshots), which outlives an etcd
        compaction; only a cache started after it forgets the older versions."""
        self.plane.compact()
        self.plane.restart("kube-apiserver")


class Fake(Cluster):
    name = "fake"

    def __init__(self, server: FakeApiServer) -> None:
        self.server, self.api = server, Api(server.url, token=TOKEN)

    def create(self, name: str, labels: dict[str, str]) -> str:
        node = self.server.add_object("nodes", node_object(name, "10.241.0.1", labels=labels))
        return str(node["metadata"]["resourceVersion"])

    def relabel(self, name: str, labels: dict[str, str]) -> str:
        node = self.server.edit_object(
            "nodes", name, lambda n: n["metadata"].setdefault("labels", {}).update(labels)
        )
        return str(node["metadata"]["resourceVersion"])

    def compact(self) -> None:
        self.server.compact()


@pytest.fixture(params=["real", "fake"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.param == "real":
        plane: ControlPlane = request.getfixturevalue("control_plane")
        real = Real(plane)
        yield real
        plane.admin.delete(NODES, labelSelector="contract").ok()
    else:
        with FakeApiServer(tokens=[TOKEN]) as server:
            yield Fake(server)


def create_labelled(cluster: Cluster, prefix: str, count: int, **labels: str) -> list[str]:
    names = [f"{prefix}-{i:02d}" for i in range(count)]
    for name in names:
        cluster.create(name, {"contract": prefix, **labels})
    return names


def watch(cluster: Cluster, **query: str) -> list[dict[str, Any]]:
    """Every event of one watch, read until the server closes it (timeoutSeconds)."""
    return list(cluster.api.watch(NODES, **query))


def test_list_pages_with_limit_and_continue(cluster: Cluster) -> None:
    names = create_labelled(cluster, "paging", 25)
    pages: list[dict[str, Any]] = []
    token = None
    while True:
        query = {"labelSelector": "contract=paging", "limit": "10"}
        if token:
            query["continue"] = token
        page = cluster.api.get(NODES, **query).ok()
        pages.append(page)
        token = page["metadata"].get("continue")
        if not token:
            break
    assert [len(p["items"]) for p in pages] == [10, 10, 5]
    assert [n["metadata"]["name"] for p in pages for n in p["items"]] == names
    # One consistent snapshot: every page carries the first page's version.
    assert {p["metadata"]["resourceVersion"] for p in pages} == {
        pages[0]["metadata"]["resourceVersion"]
    }
    # With a selector the server cannot count what is left.
    assert all("remainingItemCount" not in p["metadata"] for p in pages)

    everything = cluster.api.get(NODES).ok()["items"]
    first = cluster.api.get(NODES, limit="10").ok()
    assert first["metadata"]["remainingItemCount"] == len(everything) - 10


def test_a_watch_ends_at_timeout_seconds_with_a_bookmark_when_asked(cluster: Cluster) -> None:
    version = cluster.create("timeout-00", {"contract": "timeout"})
    # The real apiserver sends bookmarks only once its watch cache has dispatched an event
    # since it started: right after a start, the first watch may end without one.
    for attempt in range(5):
        cluster.relabel("timeout-00", {"attempt": str(attempt)})
        started = time.monotonic()
        events = watch(
            cluster,
            resourceVersion=version,
            timeoutSeconds="6",
            allowWatchBookmarks="true",
            labelSelector="contract=timeout",
        )
        assert 5 <= time.monotonic() - started < 15  # closed by the server at timeoutSeconds
        if any(e["type"] == "BOOKMARK" for e in events):
            break
    # The controller-manager writes to new Nodes (podCIDR, taints): more MODIFIED events may
    # come; the fake has no controllers. The real apiserver sends its bookmark about 2 s
    # before the deadline, the fake just before it closes.
    assert {e["type"] for e in events} <= {"MODIFIED", "BOOKMARK"}
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    bookmark = bookmarks[-1]["object"]
    assert bookmark["kind"] == "Node"
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(version)
    assert "name" not in bookmark["metadata"]

    quiet = watch(cluster, resourceVersion=version, timeoutSeconds="2")
    assert "BOOKMARK" not in {e["type"] for e in quiet}  # no bookmarks unless asked


def test_a_selector_watch_sees_objects_leave_and_enter(cluster: Cluster) -> None:
    version = cluster.create("edges-00", {"contract": "edges", "colour": "blue"})
    cluster.relabel("edges-00", {"colour": "green"})
    cluster.relabel("edges-00", {"colour": "blue"})
    events = watch(
        cluster,
        resourceVersion=version,
        timeoutSeconds="2",
        labelSelector="contract=edges,colour=blue",
    )
    # (MODIFIED: the controller-manager's writes while it matched.)
    edges = [e for e in events if e["type"] != "MODIFIED"]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in edges] == [
        ("DELETED", "edges-00"),
        ("ADDED", "edges-00"),
    ]
    # DELETED carries the object as it last matched, at the version of the change.
    left = edges[0]["object"]["metadata"]
    assert left["labels"]["colour"] == "blue"
    assert int(left["resourceVersion"]) > int(version)


def test_a_watch_without_a_version_starts_with_the_current_objects(cluster: Cluster) -> None:
    names = create_labelled(cluster, "initial", 3)
    for version in ({}, {"resourceVersion": "0"}):
        events = watch(cluster, labelSelector="contract=initial", timeoutSeconds="2", **version)
        initial = events[: len(names)]
        assert sorted((e["type"], e["object"]["metadata"]["name"]) for e in initial) == [
            ("ADDED", name) for name in names
        ]
        assert {e["type"] for e in events[len(names) :]} <= {"MODIFIED"}  # controllers


def test_label_and_field_selectors_on_list(cluster: Cluster) -> None:
    create_labelled(cluster, "select", 3, tier="a")
    cluster.create("select-xx", {"contract": "select", "tier": "b"})

    def names(**query: str) -> list[str]:
        return [n["metadata"]["name"] for n in cluster.api.get(NODES, **query).ok()["items"]]

    assert names(labelSelector="contract=select,tier!=a") == ["select-xx"]
    assert names(labelSelector="contract=select,tier in (a)") == [
        "select-00",
        "select-01",
        "select-02",
    ]
    assert names(labelSelector="contract=select,!tier") == []
    assert names(fieldSelector="metadata.name=select-01") == ["select-01"]
    assert names(labelSelector="contract=select", fieldSelector="metadata.name!=select-01") == [
        "select-00",
        "select-02",
        "select-xx",
    ]
    bad = cluster.api.get(NODES, labelSelector="contract in (")
    assert bad.status == 400, bad.body


# Last: on the real apiserver this restarts it (see Real.compact).
def test_compaction_expires_continue_tokens_and_old_watch_versions(cluster: Cluster) -> None:
    version = cluster.create("expiry-00", {"contract": "expiry"})
    create_labelled(cluster, "expiry-more", 2, **{"contract": "expiry"})
    page = cluster.api.get(NODES, labelSelector="contract=expiry", limit="1").ok()
    token = page["metadata"]["continue"]
    cluster.create("expiry-later", {"contract": "expiry"})  # compaction keeps its own version
    cluster.compact()

    response = cluster.api.get(
        NODES, labelSelector="contract=expiry", limit="1", **{"continue": token}
    )
    assert response.status == 410, response.body
    assert (response.body["reason"], response.body["code"]) == ("Expired", 410)

    # A watch from before the compaction: an ERROR event in a 200 stream, not HTTP 410.
    events = watch(cluster, resourceVersion=version, timeoutSeconds="5", allowWatchBookmarks="true")
    assert [e["type"] for e in events] == ["ERROR"]
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert "too old resource version" in status["message"]
