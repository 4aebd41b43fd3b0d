"""The fake API server honours the list/watch contract of the real one (notes/kubernetes.md).

Plain HTTP over loopback with the stdlib client, so these tests check the wire format itself;
a few use the official kubernetes client to check that it accepts what the fake serves.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from nodehosts.core.nodes import node_from_json
from nodehosts.testing.fake_apiserver import (
    ApiStatus,
    FakeApiServer,
    ResourceType,
    make_node,
)
from tests.conftest import API_TOKEN

CSRS = ResourceType(
    "/apis/certificates.k8s.io/v1",
    "certificatesigningrequests",
    "CertificateSigningRequest",
    "certificates.k8s.io/v1",
)


def request(
    server: FakeApiServer,
    path: str,
    *,
    query: dict[str, str] | None = None,
    method: str = "GET",
    body: Any = None,
    token: str | None = API_TOKEN,
    read_body: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    url = path + ("?" + urlencode(query) if query else "")
    try:
        connection.request(method, url, body=data, headers=headers)
        response = connection.getresponse()
        body = response.read() if read_body else b""
        return response.status, dict(response.getheaders()), body
    finally:
        connection.close()


def get_json(server: FakeApiServer, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = request(server, path, **kwargs)
    return status, json.loads(body)


def names(document: Any) -> list[str]:
    return [item["metadata"]["name"] for item in document["items"]]


class Watch:
    """An open watch stream read line by line."""

    def __init__(self, server: FakeApiServer, query: dict[str, str], path: str = "/api/v1/nodes"):
        self.connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
        self.connection.request(
            "GET",
            path + "?" + urlencode({"watch": "true", **query}),
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        self.response = self.connection.getresponse()
        self.buffer = b""

    def next(self) -> Any:
        """The next event; None at a clean end; IncompleteRead when the stream is cut."""
        # read1(), not readline(): http.client's readline hides a cut chunked stream.
        while b"\n" not in self.buffer:
            data = self.response.read1(65536)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def take(self, count: int) -> list[Any]:
        return [self.next() for _ in range(count)]

    def rest(self) -> list[Any]:
        events = []
        while (event := self.next()) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    opened: list[Watch] = []
    yield opened
    for watch in opened:
        watch.close()


def open_watch(server: FakeApiServer, watches: list[Watch], **query: str) -> Watch:
    watch = Watch(server, query)
    watches.append(watch)
    return watch


def add(server: FakeApiServer, *names_: str, labels: dict[str, str] | None = None) -> None:
    for i, name in enumerate(names_):
        server.add_object("nodes", make_node(name, addresses=[f"10.0.0.{i + 1}"], labels=labels))


def wait_for(probe: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --------------------------------------------------------------------------- LIST and GET


def test_a_list_carries_kind_the_global_version_and_items_sorted_by_name(api_server):
    """LIST answers {Kind}List with metadata.resourceVersion, items in name order."""
    add(api_server, "worker-2", "worker-1", "controller-0")
    status, document = get_json(api_server, "/api/v1/nodes")
    assert status == 200
    assert document["kind"] == "NodeList"
    assert document["apiVersion"] == "v1"
    assert document["metadata"]["resourceVersion"] == api_server.resource_version
    assert names(document) == ["controller-0", "worker-1", "worker-2"]
    assert all(item["kind"] == "Node" for item in document["items"])


def test_every_write_bumps_one_global_version_shared_by_all_collections(api_server):
    """Versions come from one counter (like etcd's revision), across resource types."""
    api_server.register(CSRS)
    before = int(api_server.resource_version)
    node = api_server.add_object("nodes", make_node("worker-1", addresses=["10.0.0.1"]))
    csr = api_server.add_object(CSRS.plural, {"metadata": {"name": "csr-1"}, "spec": {}})
    assert int(node["metadata"]["resourceVersion"]) == before + 1
    assert int(csr["metadata"]["resourceVersion"]) == before + 2
    assert api_server.resource_version == str(before + 2)


def test_paging_serves_a_consistent_snapshot(api_server):
    """limit/continue pages over the list as of the first page, whatever happens meanwhile."""
    add(api_server, *(f"n{i}" for i in range(5)))
    _, first = get_json(api_server, "/api/v1/nodes", query={"limit": "2"})
    assert names(first) == ["n0", "n1"]
    assert first["metadata"]["remainingItemCount"] == 3
    api_server.delete_object("nodes", "n3")
    add(api_server, "n9")
    token = first["metadata"]["continue"]
    _, second = get_json(api_server, "/api/v1/nodes", query={"limit": "2", "continue": token})
    _, third = get_json(
        api_server,
        "/api/v1/nodes",
        query={"limit": "2", "continue": second["metadata"]["continue"]},
    )
    assert names(second) + names(third) == ["n2", "n3", "n4"]
    assert "continue" not in third["metadata"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_a_continue_token_older_than_a_compaction_is_expired(api_server):
    """After compaction the snapshot is gone: 410 Expired, start the list again."""
    add(api_server, "a", "b", "c")
    _, first = get_json(api_server, "/api/v1/nodes", query={"limit": "1"})
    add(api_server, "d")
    api_server.compact()
    status, answer = get_json(
        api_server, "/api/v1/nodes", query={"limit": "1", "continue": first["metadata"]["continue"]}
    )
    assert status == 410
    assert (answer["kind"], answer["reason"], answer["code"]) == ("Status", "Expired", 410)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("role=worker", ["w1", "w2"]),
        ("role==worker", ["w1", "w2"]),
        ("role!=worker", ["c0", "x"]),
        ("role in (worker, cp)", ["c0", "w1", "w2"]),
        ("role notin (worker)", ["c0", "x"]),
        ("role", ["c0", "w1", "w2"]),
        ("!role", ["x"]),
        ("role=worker,zone=a", ["w1"]),
        ("", ["c0", "w1", "w2", "x"]),
    ],
)
def test_label_selectors_filter_like_the_apiserver(api_server, selector, expected):
    """=, ==, !=, in, notin, exists, !exists, and their conjunction."""
    api_server.add_object("nodes", make_node("c0", addresses=["1.1.1.1"], labels={"role": "cp"}))
    api_server.add_object(
        "nodes", make_node("w1", addresses=["1.1.1.2"], labels={"role": "worker", "zone": "a"})
    )
    api_server.add_object(
        "nodes", make_node("w2", addresses=["1.1.1.3"], labels={"role": "worker", "zone": "b"})
    )
    api_server.add_object("nodes", make_node("x", addresses=["1.1.1.4"]))
    _, document = get_json(api_server, "/api/v1/nodes", query={"labelSelector": selector})
    assert names(document) == expected


@pytest.mark.parametrize("selector", ["role in worker", "=x", "a=b,,c=d"])
def test_an_invalid_label_selector_is_a_bad_request(api_server, selector):
    """Syntax errors answer 400 BadRequest as a Status."""
    status, answer = get_json(api_server, "/api/v1/nodes", query={"labelSelector": selector})
    assert status == 400
    assert answer["reason"] == "BadRequest"


def test_field_selectors_on_the_name_filter_and_others_are_refused(api_server):
    """metadata.name=, != work; an unsupported field is a 400, as for real Nodes."""
    add(api_server, "a", "b")
    _, only = get_json(api_server, "/api/v1/nodes", query={"fieldSelector": "metadata.name=b"})
    _, others = get_json(api_server, "/api/v1/nodes", query={"fieldSelector": "metadata.name!=b"})
    status, _ = get_json(api_server, "/api/v1/nodes", query={"fieldSelector": "spec.foo=1"})
    assert (names(only), names(others), status) == (["b"], ["a"], 400)


def test_get_returns_one_object_or_a_not_found_status(api_server):
    """GET <collection>/<name>."""
    add(api_server, "worker-1")
    status, node = get_json(api_server, "/api/v1/nodes/worker-1")
    assert (status, node["metadata"]["name"]) == (200, "worker-1")
    status, answer = get_json(api_server, "/api/v1/nodes/worker-9")
    assert (status, answer["reason"]) == (404, "NotFound")


def test_unknown_paths_are_not_found(api_server):
    status, answer = get_json(api_server, "/api/v1/pods")
    assert (status, answer["code"]) == (404, 404)


# --------------------------------------------------------------------------- WATCH


def test_a_watch_streams_events_in_order_as_chunked_ndjson(api_server, watches):
    """ADDED/MODIFIED/DELETED after the given version, one JSON object per line, chunked."""
    add(api_server, "a")
    since = api_server.resource_version
    watch = open_watch(api_server, watches, resourceVersion=since)
    assert watch.response.getheader("Transfer-Encoding") == "chunked"
    add(api_server, "b")
    api_server.heartbeat("a")
    api_server.delete_object("nodes", "b")
    events = watch.take(3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(since)


def test_a_watch_from_an_old_version_replays_the_history(api_server, watches):
    """Events already in the history are sent first (that is how a resumed watch catches up)."""
    add(api_server, "a")
    since = api_server.resource_version
    add(api_server, "b")
    watch = open_watch(api_server, watches, resourceVersion=since)
    assert watch.next()["object"]["metadata"]["name"] == "b"


def test_a_watch_without_a_version_starts_with_the_current_objects(api_server, watches):
    """resourceVersion absent or "0": synthetic ADDED events for what exists now."""
    add(api_server, "a", "b")
    watch = open_watch(api_server, watches)
    add(api_server, "c")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in watch.take(3)] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]


def test_a_watch_ends_cleanly_after_timeout_seconds_with_a_final_bookmark(api_server, watches):
    """timeoutSeconds closes the stream (a clean end); with bookmarks, one comes last."""
    add(api_server, "a")
    started = time.monotonic()
    watch = open_watch(
        api_server,
        watches,
        resourceVersion=api_server.resource_version,
        timeoutSeconds="1",
        allowWatchBookmarks="true",
    )
    add(api_server, "b")
    events = watch.rest()
    assert time.monotonic() - started >= 0.9, "ended before timeoutSeconds"
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[-1]["object"]["metadata"] == {"resourceVersion": api_server.resource_version}


def test_bookmarks_carry_only_the_version_and_only_when_asked_for(api_server, watches):
    """BOOKMARK objects have kind, apiVersion and metadata.resourceVersion, nothing else."""
    add(api_server, "a")
    with_bookmarks = open_watch(
        api_server,
        watches,
        resourceVersion=api_server.resource_version,
        allowWatchBookmarks="true",
    )
    without = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    wait_for(lambda: api_server.watch_count == 2)
    api_server.send_bookmarks()
    event = with_bookmarks.next()
    assert event == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": api_server.resource_version},
        },
    }
    add(api_server, "b")
    assert without.next()["type"] == "ADDED"


def test_periodic_bookmarks_follow_the_bookmark_interval():
    """Bookmarks also come on their own, every bookmark_interval seconds."""
    with FakeApiServer(bookmark_interval=0.2) as server:
        watch = Watch(server, {"resourceVersion": "1", "allowWatchBookmarks": "true"})
        try:
            assert watch.next()["type"] == "BOOKMARK"
            assert watch.next()["type"] == "BOOKMARK"
        finally:
            watch.close()


@pytest.mark.parametrize("since", ["1", "2"])
def test_a_watch_from_a_compacted_version_gets_an_expired_error_event(api_server, watches, since):
    """Older than the history: one ERROR event with a 410 Expired Status, then the end."""
    add(api_server, "a", "b")
    api_server.compact()
    watch = open_watch(api_server, watches, resourceVersion=since)
    [event] = watch.rest()
    assert event["type"] == "ERROR"
    status = event["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")


def test_a_watch_from_the_compacted_version_itself_is_fine(api_server, watches):
    """The version a compaction leaves is still a valid place to start."""
    add(api_server, "a")
    compacted = api_server.compact()
    watch = open_watch(api_server, watches, resourceVersion=compacted)
    add(api_server, "b")
    assert watch.next()["type"] == "ADDED"


def test_expired_as_http_answers_410_on_the_request(api_server):
    """The other form a too-old version takes: HTTP 410 with a Status body."""
    add(api_server, "a", "b")
    api_server.compact()
    api_server.expired_as = "http"
    status, answer = get_json(
        api_server, "/api/v1/nodes", query={"watch": "true", "resourceVersion": "1"}
    )
    assert (status, answer["code"], answer["reason"]) == (410, 410, "Expired")


def test_an_open_watch_with_unsent_events_expires_when_they_are_compacted(api_server, watches):
    """Writes and a compaction in one transaction: the watch gets 410, not the events."""
    add(api_server, "a")
    watch = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    wait_for(lambda: api_server.watch_count == 1)
    with api_server.transaction():
        api_server.delete_object("nodes", "a")
        api_server.compact()
    [event] = watch.rest()
    assert (event["type"], event["object"]["code"]) == ("ERROR", 410)


def test_an_open_watch_that_is_up_to_date_survives_a_compaction(api_server, watches):
    """Compaction only hurts watches that still needed the dropped history."""
    add(api_server, "a")
    watch = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    wait_for(lambda: api_server.watch_count == 1)
    time.sleep(0.05)
    api_server.compact()
    add(api_server, "b")
    assert watch.next()["type"] == "ADDED"


def test_a_history_limit_compacts_automatically(watches):
    """history_limit keeps only the newest events, like a finite watch cache."""
    with FakeApiServer(history_limit=2) as server:
        add(server, "a", "b", "c", "d")
        status, _, body = request(
            server, "/api/v1/nodes", query={"watch": "1", "resourceVersion": "2"}, token=None
        )
        assert status == 200
        assert json.loads(body.splitlines()[0])["object"]["code"] == 410


def test_a_label_selected_watch_sees_objects_enter_and_leave_the_selection(api_server, watches):
    """Relabelled out: DELETED; relabelled in: ADDED; unselected changes: nothing."""
    api_server.add_object("nodes", make_node("w", addresses=["1.1.1.1"], labels={"r": "w"}))
    api_server.add_object("nodes", make_node("c", addresses=["1.1.1.2"], labels={"r": "c"}))
    watch = open_watch(
        api_server,
        watches,
        resourceVersion=api_server.resource_version,
        labelSelector="r=w",
    )
    api_server.heartbeat("c")
    api_server.modify_object("nodes", make_node("w", addresses=["1.1.1.1"], labels={"r": "c"}))
    api_server.modify_object("nodes", make_node("c", addresses=["1.1.1.2"], labels={"r": "w"}))
    api_server.heartbeat("c")
    api_server.heartbeat("w")
    api_server.add_object("nodes", make_node("end", addresses=["1.1.1.3"], labels={"r": "w"}))
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in watch.take(4)]
    assert events == [("DELETED", "w"), ("ADDED", "c"), ("MODIFIED", "c"), ("ADDED", "end")]


def test_a_watch_only_sees_its_own_collection(api_server, watches):
    """Writes to other resources move the version but are not sent to a Node watch."""
    api_server.register(CSRS)
    watch = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    api_server.add_object(CSRS.plural, {"metadata": {"name": "csr-1"}, "spec": {}})
    add(api_server, "a")
    assert watch.next()["object"]["kind"] == "Node"


def test_a_watch_ends_when_its_client_hangs_up(api_server, watches):
    """The server notices a client that went away, even on an idle watch."""
    watch = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    wait_for(lambda: api_server.watch_count == 1)
    watch.close()
    wait_for(lambda: api_server.watch_count == 0)


# --------------------------------------------------------------------------- auth


def test_requests_without_a_valid_token_get_a_401_status(api_server):
    """No token or an unknown token: 401 with a Status body."""
    for token in (None, "wrong"):
        status, answer = get_json(api_server, "/api/v1/nodes", token=token)
        assert (status, answer["kind"], answer["reason"]) == (401, "Status", "Unauthorized")


def test_tokens_can_be_revoked_and_added_at_runtime(api_server):
    """revoke() refuses a token from the next request on; authorize() adds one."""
    api_server.authorize("second")
    assert request(api_server, "/api/v1/nodes", token="second")[0] == 200
    api_server.revoke(API_TOKEN)
    assert request(api_server, "/api/v1/nodes")[0] == 401
    assert request(api_server, "/api/v1/nodes", token="second")[0] == 200


def test_without_tokens_authentication_is_off():
    with FakeApiServer() as server:
        assert request(server, "/api/v1/nodes", token=None)[0] == 200


def test_requests_are_recorded_for_tests(api_server):
    """verb, path, query and bearer token of every request."""
    request(api_server, "/api/v1/nodes", query={"limit": "5"})
    request(api_server, "/api/v1/nodes", query={"watch": "true"}, read_body=False)
    request(api_server, "/api/v1/nodes/x", token="other")
    assert [(r.verb, r.path, r.token) for r in api_server.requests] == [
        ("list", "/api/v1/nodes", API_TOKEN),
        ("watch", "/api/v1/nodes", API_TOKEN),
        ("get", "/api/v1/nodes/x", "other"),
    ]
    assert api_server.requests[0].query == {"limit": "5"}


# --------------------------------------------------------------------------- faults


def test_fail_next_answers_that_many_matching_requests_with_the_status(api_server):
    """Faults apply to the next N requests of the given verbs only."""
    api_server.fail_next(2, status=503, verbs=["watch"])
    assert request(api_server, "/api/v1/nodes")[0] == 200
    statuses = [
        request(api_server, "/api/v1/nodes", query={"watch": "1"}, read_body=False)[0]
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]


def test_an_injected_401_looks_like_a_real_one(api_server):
    api_server.fail_next(status=401)
    status, answer = get_json(api_server, "/api/v1/nodes")
    assert (status, answer["code"], answer["reason"]) == (401, 401, "Unauthorized")


def test_garbage_next_answers_200_with_a_body_that_is_not_json(api_server):
    api_server.garbage_next(1)
    status, _, body = request(api_server, "/api/v1/nodes")
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)


def test_drop_next_cuts_a_list_body_midway(api_server):
    """The client sees fewer bytes than Content-Length: a broken response."""
    add(api_server, "a", "b")
    api_server.drop_next(1, verbs=["list"])
    with pytest.raises(http.client.IncompleteRead):
        request(api_server, "/api/v1/nodes")


def test_drop_next_cuts_a_watch_after_n_events(api_server, watches):
    """A watch dropped after N events ends without the chunked terminator."""
    add(api_server, "a", "b", "c")
    api_server.drop_next(1, verbs=["watch"], after_events=2)
    watch = open_watch(api_server, watches)
    assert watch.next()["type"] == "ADDED"
    assert watch.next()["type"] == "ADDED"
    with pytest.raises(http.client.IncompleteRead):
        watch.next()


def test_drop_next_with_no_events_cuts_a_watch_at_once(api_server, watches):
    """after_events=0: the stream is cut right after the headers, even with nothing to send."""
    api_server.drop_next(1, verbs=["watch"])
    watch = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    with pytest.raises(http.client.IncompleteRead):
        watch.next()


def test_drop_watches_cuts_every_open_stream(api_server, watches):
    one = open_watch(api_server, watches, resourceVersion="1")
    two = open_watch(api_server, watches, resourceVersion="1")
    wait_for(lambda: api_server.watch_count == 2)
    assert api_server.drop_watches() == 2
    for watch in (one, two):
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            watch.next()


def test_an_outage_refuses_connections_until_restored_on_the_same_port(api_server, watches):
    """outage(): connection refused and open watches cut; restore(): same port, same data."""
    add(api_server, "a")
    watch = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    wait_for(lambda: api_server.watch_count == 1)
    port = api_server.port
    api_server.outage()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        watch.next()
    add(api_server, "b")  # the store keeps working while the API is down
    api_server.restore()
    assert api_server.port == port
    _, document = get_json(api_server, "/api/v1/nodes")
    assert names(document) == ["a", "b"]


def test_down_is_an_outage_for_the_duration_of_a_block(api_server):
    with api_server.down(), pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", api_server.port), timeout=1)
    assert request(api_server, "/api/v1/nodes")[0] == 200


# --------------------------------------------------------------------------- updates, extension


def test_put_replaces_an_object_and_refuses_a_stale_version(api_server, watches):
    """PUT with the current resourceVersion succeeds (MODIFIED); a stale one is 409 Conflict."""
    add(api_server, "a")
    status, current = get_json(api_server, "/api/v1/nodes/a")
    watch = open_watch(api_server, watches, resourceVersion=api_server.resource_version)
    current["spec"]["unschedulable"] = True
    status, stored = get_json(api_server, "/api/v1/nodes/a", method="PUT", body=current)
    assert status == 200 and stored["spec"]["unschedulable"] is True
    status, answer = get_json(api_server, "/api/v1/nodes/a", method="PUT", body=current)
    assert (status, answer["reason"]) == (409, "Conflict")
    add(api_server, "end")
    assert [e["type"] for e in watch.take(2)] == ["MODIFIED", "ADDED"]


def test_a_registered_resource_with_a_subresource_is_served_like_nodes(api_server, watches):
    """The extension point: register() a collection and a PUT handler for a subresource."""

    def approval(current: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(c.get("type") not in ("Approved", "Denied") for c in conditions):
            raise ApiStatus(422, "Invalid", "only Approved or Denied conditions")
        current.setdefault("status", {})["conditions"] = conditions
        return current

    api_server.register(CSRS, subresources={"approval": approval})
    csr = api_server.add_object(
        CSRS.plural, {"metadata": {"name": "csr-1"}, "spec": {"signerName": "x"}}
    )
    path = f"{CSRS.path}/csr-1"
    _, listed = get_json(api_server, CSRS.path)
    assert (listed["kind"], names(listed)) == ("CertificateSigningRequestList", ["csr-1"])
    since = csr["metadata"]["resourceVersion"]
    watch = Watch(api_server, {"resourceVersion": since}, path=CSRS.path)
    watches.append(watch)
    body = dict(csr, status={"conditions": [{"type": "Approved", "status": "True"}]})
    status, stored = get_json(api_server, path + "/approval", method="PUT", body=body)
    assert status == 200
    assert stored["status"]["conditions"][0]["type"] == "Approved"
    assert stored["spec"] == {"signerName": "x"}
    status, refused = get_json(
        api_server,
        path + "/approval",
        method="PUT",
        body=dict(stored, status={"conditions": [{"type": "Bogus"}]}),
    )
    assert (status, refused["code"]) == (422, 422)
    status, _ = get_json(api_server, path + "/status", method="PUT", body=stored)
    assert status == 404
    event = watch.next()
    assert (event["type"], event["object"]["kind"]) == ("MODIFIED", "CertificateSigningRequest")
    assert event["object"]["status"]["conditions"][0]["type"] == "Approved"


# --------------------------------------------------------------------------- Node JSON, kubeconfig


def test_a_realistic_node_is_about_ten_kilobytes_and_readable():
    """realistic=True: ~10 KB like a kubelet's Node, and node_from_json reads it."""
    node = make_node("worker-1", addresses=["10.240.0.101"], realistic=True)
    size = len(json.dumps(node, separators=(",", ":")))
    assert 8_000 < size < 14_000
    assert len(node["status"]["images"]) == 30
    assert node["metadata"]["managedFields"]
    info = node_from_json(node)
    assert info.addresses == (("InternalIP", "10.240.0.101"), ("Hostname", "worker-1"))
    assert info.ready is True


def test_make_node_builds_what_nodehosts_reads():
    """Addresses, hostname, readiness, unschedulable and labels come out as given."""
    node = make_node(
        "w",
        addresses=[("ExternalIP", "192.0.2.1"), "10.0.0.1"],
        hostname="w.lab",
        ready=False,
        unschedulable=True,
        labels={"a": "b"},
    )
    info = node_from_json(node)
    assert info.addresses == (
        ("ExternalIP", "192.0.2.1"),
        ("InternalIP", "10.0.0.1"),
        ("Hostname", "w.lab"),
    )
    assert (info.ready, info.unschedulable) == (False, True)
    assert node["metadata"]["labels"]["a"] == "b"
    assert node_from_json(make_node("n", addresses=[], hostname="", ready=None)).ready is None


def test_a_heartbeat_moves_only_the_heartbeat_times(api_server):
    """What a kubelet does every few seconds: a new version, nothing else but the times."""
    api_server.add_object("nodes", make_node("w", addresses=["10.0.0.1"], realistic=True))
    before = api_server.get_object("nodes", "w")
    for condition in before["status"]["conditions"]:
        condition["lastHeartbeatTime"] = "2000-01-01T00:00:00Z"
    api_server.modify_object("nodes", before)
    before = api_server.get_object("nodes", "w")
    after = api_server.heartbeat("w")
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    for obj in (before, after):
        del obj["metadata"]["resourceVersion"]
        for condition in obj["status"]["conditions"]:
            condition.pop("lastHeartbeatTime")
    assert after == before


def test_the_official_client_lists_watches_and_reads_what_the_fake_serves(api_server, tmp_path):
    """The kubeconfig loads, and CoreV1Api deserializes realistic Nodes (strict in 37.x)."""
    from kubernetes import client, config

    api_server.add_object("nodes", make_node("w1", addresses=["10.0.0.1"], realistic=True))
    api_server.add_object("nodes", make_node("w2", addresses=["10.0.0.2"], realistic=True))
    path = api_server.write_kubeconfig(tmp_path / "kubeconfig", token=API_TOKEN)
    configuration = client.Configuration()
    config.load_kube_config(str(path), client_configuration=configuration)
    api = client.CoreV1Api(client.ApiClient(configuration))
    first = api.list_node(limit=1)
    second = api.list_node(limit=1, _continue=first.metadata._continue)
    assert [n.metadata.name for n in first.items + second.items] == ["w1", "w2"]
    assert first.items[0].status.node_info.kubelet_version == "v1.30.2"
    assert api.read_node("w2").status.addresses[0].address == "10.0.0.2"


def test_the_kubeconfig_carries_the_ca_for_a_tls_server(tmp_path):
    """tls=True: https URL and certificate-authority-data in the kubeconfig."""
    with FakeApiServer(tls=True) as server:
        path = server.write_kubeconfig(tmp_path / "kubeconfig")
        cluster = json.loads(Path(path).read_text())["clusters"][0]["cluster"]
        assert cluster["server"].startswith("https://127.0.0.1:")
        assert server.ca_pem is not None
        assert base64.b64decode(cluster["certificate-authority-data"]) == server.ca_pem


def test_only_loopback_addresses_are_accepted():
    """The fake never listens beyond this machine."""
    with pytest.raises(ValueError, match="loopback"):
        FakeApiServer(host="0.0.0.0")


def test_it_also_listens_on_ipv6_loopback():
    with FakeApiServer(host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        connection = http.client.HTTPConnection("::1", server.port, timeout=5)
        connection.request("GET", "/api/v1/nodes")
        assert connection.getresponse().status == 200
        connection.close()
