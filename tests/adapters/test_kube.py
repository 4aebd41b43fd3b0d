"""NodeSource and list_nodes: the official client's config and transport, our list/watch loop.

Everything runs the real kubernetes client over real HTTP (loopback) against the fake API
server; what is asserted is what the daemon's listener sees, and how the API is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nodehosts.adapters.kube.config import (
    SERVICE_ACCOUNT_DIR,
    KubeConfigError,
    credential_files,
    load_client_configuration,
)
from nodehosts.adapters.kube.errors import KubeApiError
from nodehosts.adapters.kube.nodes import NodeSource, list_nodes
from nodehosts.adapters.kube.reflector import Tuning
from nodehosts.adapters.kube.transport import ClientHolder
from nodehosts.core.model import NodeInfo
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.conftest import API_TOKEN

T = TypeVar("T")

# Short timeouts and backoffs: every recovery in here takes milliseconds.
FAST = Tuning(
    watch_timeout=30,
    watch_grace=5,
    connect_timeout=1,
    read_timeout=5,
    backoff_base=0.01,
    backoff_cap=0.05,
)


class Listener:
    """Records every call, and the thread it came on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.threads: set[int] = set()

    def _record(self, kind: str, a: Any, b: Any) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append((kind, a, b))

    def nodes_synced(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        self._record("synced", nodes, resource_version)

    def nodes_changed(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        self._record("changed", nodes, resource_version)

    def source_error(self, reason: str, message: str) -> None:
        self._record("error", reason, message)

    def source_recovered(self) -> None:
        self._record("recovered", None, None)

    def of(self, kind: str) -> list[tuple[str, Any, Any]]:
        return [call for call in self.calls if call[0] == kind]

    @property
    def nodes(self) -> Mapping[str, NodeInfo]:
        """The newest state delivered."""
        states = [call for call in self.calls if call[0] in ("synced", "changed")]
        return states[-1][1] if states else {}

    @property
    def errors(self) -> list[str]:
        return [call[1] for call in self.of("error")]


async def eventually(probe: Callable[[], T], *, timeout: float = 5.0, what: str = "condition") -> T:
    """Poll without blocking the event loop (the listener runs on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(source: NodeSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def add_nodes(server: FakeApiServer, count: int, *, prefix: str = "worker-") -> None:
    for i in range(count):
        server.add_object(
            "nodes", make_node(f"{prefix}{i}", addresses=[f"10.240.{i // 250}.{i % 250}"])
        )


def source_for(
    kubeconfig: Path, listener: Listener, *, tuning: Tuning = FAST, **kwargs: Any
) -> NodeSource:
    return NodeSource(
        lambda: load_client_configuration(kubeconfig), listener, tuning=tuning, **kwargs
    )


def address_of(nodes: Mapping[str, NodeInfo], name: str) -> str:
    return dict(nodes[name].addresses)["InternalIP"]


def set_address(server: FakeApiServer, name: str, address: str) -> None:
    def edit(node: dict[str, Any]) -> None:
        for entry in node["status"]["addresses"]:
            if entry["type"] == "InternalIP":
                entry["address"] = address

    server.edit_object("nodes", name, edit)


def requests_of(server: FakeApiServer, verb: str) -> list[Any]:
    return [r for r in list(server.requests) if r.verb == verb]


# --------------------------------------------------------------------------- sync and events


async def test_the_first_sync_pages_through_more_than_500_nodes(api_server, kubeconfig):
    """1203 nodes arrive as one nodes_synced, fetched as three pages of at most 500."""
    add_nodes(api_server, 1203)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"), what="first sync")
    [(_, nodes, version)] = listener.of("synced")
    assert len(nodes) == 1203
    assert version == api_server.resource_version
    lists = requests_of(api_server, "list")
    assert [r.query.get("limit") for r in lists] == ["500", "500", "500"]
    assert [bool(r.query.get("continue")) for r in lists] == [False, True, True]
    assert listener.of("changed") == [] and listener.errors == []


async def test_added_modified_and_deleted_nodes_reach_the_listener(api_server, kubeconfig):
    """Watch events become nodes_changed calls carrying the whole new state."""
    add_nodes(api_server, 2)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        api_server.add_object("nodes", make_node("worker-7", addresses=["10.240.0.107"]))
        await eventually(lambda: "worker-7" in listener.nodes, what="worker-7 added")
        api_server.modify_object(
            "nodes", make_node("worker-7", addresses=["10.240.0.107"], ready=False)
        )
        await eventually(lambda: listener.nodes["worker-7"].ready is False, what="NotReady")
        api_server.delete_object("nodes", "worker-0")
        await eventually(lambda: "worker-0" not in listener.nodes, what="worker-0 deleted")
    assert sorted(listener.nodes) == ["worker-1", "worker-7"]
    assert listener.calls[-1][2] == api_server.resource_version
    assert len(requests_of(api_server, "list")) == 1


async def test_a_burst_while_the_loop_is_busy_costs_no_copy_of_the_nodes_per_event(
    api_server, kubeconfig
):
    """Issue 12: each event copied the whole node map for the loop thread, and the copies
    piled up while the loop was busy (20,000 Nodes, 2000 changes: RSS 144 -> 832 MB). Now a
    burst costs one copy, when the loop takes it, whatever its length."""
    add_nodes(api_server, 2000)
    listener = Listener()
    source = source_for(kubeconfig, listener)
    async with running(source):
        await eventually(lambda: listener.of("synced"), timeout=30, what="first sync")
        tracemalloc.start()
        try:
            # The loop thread is busy here (no await): the worker applies and queues alone.
            for i in range(300):
                set_address(api_server, f"worker-{i}", f"10.250.{i // 250}.{i % 250 + 1}")
            deadline = time.monotonic() + 30
            while source._inventory.resource_version != api_server.resource_version:
                assert time.monotonic() < deadline, "the worker did not apply the burst"
                time.sleep(0.01)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await eventually(
            lambda: address_of(listener.nodes, "worker-299") == "10.250.1.50", what="the burst"
        )
    # One copy of 2000 entries is ~0.2 MB; one per event was 16 MB here.
    assert peak < 4_000_000, f"{peak / 1e6:.1f} MB traced during a 300-event burst"
    assert len(listener.of("changed")) <= 2


async def test_a_dhcp_address_change_is_delivered(api_server, kubeconfig):
    """A worker that gets a new lease is published with its new address."""
    add_nodes(api_server, 3)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        set_address(api_server, "worker-1", "10.240.0.199")
        await eventually(lambda: listener.of("changed"), what="the change")
    assert address_of(listener.nodes, "worker-1") == "10.240.0.199"
    assert address_of(listener.nodes, "worker-2") == "10.240.0.2"


async def test_heartbeats_alone_never_produce_nodes_changed(api_server, kubeconfig):
    """Kubelet heartbeats (most of the event stream) must not look like changes."""
    for i in range(5):
        api_server.add_object(
            "nodes", make_node(f"worker-{i}", addresses=[f"10.240.0.{i + 1}"], realistic=True)
        )
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        for _ in range(20):
            for i in range(5):
                api_server.heartbeat(f"worker-{i}")
        # A real change after the heartbeats: once it arrives, all heartbeats were processed.
        set_address(api_server, "worker-4", "10.240.0.99")
        await eventually(lambda: listener.of("changed"), what="the sentinel change")
    [(_, nodes, version)] = listener.of("changed")
    assert address_of(nodes, "worker-4") == "10.240.0.99"
    assert version == api_server.resource_version


async def test_the_mapping_handed_out_never_changes_afterwards(api_server, kubeconfig):
    """A listener may keep the mapping it got: it is a read-only snapshot."""
    add_nodes(api_server, 2)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        first = listener.nodes
        api_server.delete_object("nodes", "worker-0")
        await eventually(lambda: listener.of("changed"))
    assert sorted(first) == ["worker-0", "worker-1"]
    with pytest.raises(TypeError):
        first["worker-9"] = first["worker-0"]  # type: ignore[index]  # read-only: the point


async def test_the_listener_is_called_on_the_event_loop_thread(api_server, kubeconfig):
    """The blocking I/O is in a worker thread; the callbacks are not."""
    add_nodes(api_server, 1)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        api_server.delete_object("nodes", "worker-0")
        await eventually(lambda: listener.of("changed"))
    assert listener.threads == {threading.get_ident()}


async def test_a_broken_node_is_skipped_without_stopping_the_source(api_server, kubeconfig):
    """A Node we cannot read is reported in the log; the others are still published."""
    add_nodes(api_server, 2)
    broken = make_node("worker-9", addresses=["10.240.0.9"])
    broken["status"]["addresses"] = "10.240.0.9"
    api_server.add_object("nodes", broken)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        assert sorted(listener.nodes) == ["worker-0", "worker-1"]
        api_server.delete_object("nodes", "worker-0")
        await eventually(lambda: listener.of("changed"))
    assert sorted(listener.nodes) == ["worker-1"]


# --------------------------------------------------------------------------- watch lifecycle


async def test_a_watch_timeout_rewatches_from_the_last_version_without_relisting(
    api_server, kubeconfig
):
    """The server ends watches after timeoutSeconds: resume from the last event's version."""
    add_nodes(api_server, 2)
    listener = Listener()
    source = source_for(kubeconfig, listener, tuning=replace(FAST, watch_timeout=1))
    async with running(source):
        await eventually(lambda: listener.of("synced"))
        set_address(api_server, "worker-0", "10.240.9.9")
        await eventually(lambda: listener.of("changed"))
        version = api_server.resource_version
        await eventually(
            lambda: [
                r for r in requests_of(api_server, "watch") if r.query["resourceVersion"] == version
            ],
            what="a second watch from the last event's version",
        )
    watches = requests_of(api_server, "watch")
    assert all(r.query["timeoutSeconds"] == "1" for r in watches)
    assert all(r.query["allowWatchBookmarks"] == "true" for r in watches)
    assert len(requests_of(api_server, "list")) == 1
    assert listener.errors == []


async def test_bookmarks_advance_the_version_so_a_rewatch_survives_compaction(
    api_server, kubeconfig
):
    """Events we are not shown still move the version: bookmarks keep the watch resumable."""
    api_server.add_object(
        "nodes", make_node("worker-1", addresses=["10.240.0.101"], labels={"role": "worker"})
    )
    api_server.add_object(
        "nodes", make_node("controller-0", addresses=["10.240.0.10"], labels={"role": "cp"})
    )
    listener = Listener()
    async with running(source_for(kubeconfig, listener, label_selector="role=worker")):
        await eventually(lambda: listener.of("synced"))
        await eventually(lambda: api_server.watch_count == 1, what="an open watch")
        for _ in range(5):  # changes this watch never sees
            api_server.heartbeat("controller-0")
        api_server.send_bookmarks()
        await eventually(lambda: api_server.bookmarks_sent >= 1, what="a bookmark")
        compacted = api_server.compact()
        api_server.drop_watches()
        await eventually(
            lambda: [
                r
                for r in requests_of(api_server, "watch")
                if r.query["resourceVersion"] == compacted
            ],
            what="a watch from the bookmark's version",
        )
        await asyncio.sleep(0.1)
    assert len(requests_of(api_server, "list")) == 1, "no relist: the bookmark version was valid"
    assert len(listener.of("synced")) == 1


@pytest.mark.parametrize("form", ["event", "http"])
async def test_expired_versions_relist_and_nodes_deleted_meanwhile_disappear(
    api_server, kubeconfig, form
):
    """410 (as an ERROR event or as HTTP 410) rebuilds the state from a fresh LIST."""
    add_nodes(api_server, 3)
    api_server.expired_as = form
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        with api_server.transaction():  # the DELETED event is compacted away before it is sent
            api_server.delete_object("nodes", "worker-1")
            api_server.compact()
            if form == "http":
                api_server.drop_watches()  # the re-watch from the old version gets HTTP 410
        await eventually(lambda: len(listener.of("synced")) == 2, what="the relist")
    [_, (_, nodes, version)] = listener.of("synced")
    assert sorted(nodes) == ["worker-0", "worker-2"]
    assert version == api_server.resource_version
    assert listener.of("changed") == []


async def test_a_relist_that_finds_nothing_new_still_reports_a_sync(api_server, kubeconfig):
    """Every complete LIST is a nodes_synced, even with equal content (it clears errors)."""
    add_nodes(api_server, 2)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        with api_server.transaction():
            api_server.heartbeat("worker-0")
            api_server.compact()
        await eventually(lambda: len(listener.of("synced")) == 2)
    assert listener.of("synced")[0][1] == listener.of("synced")[1][1]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("inject", "reason"),
    [
        (lambda s: s.fail_next(2, status=503, verbs=["watch"]), "server_error"),
        (lambda s: s.fail_next(1, status=500, verbs=["watch"]), "server_error"),
        (lambda s: s.fail_next(1, status=401, verbs=["watch"]), "unauthorized"),
        (lambda s: s.fail_next(1, status=403, verbs=["watch"]), "forbidden"),
        (lambda s: s.garbage_next(1, verbs=["watch"]), "bad_response"),
        (lambda s: s.drop_next(1, verbs=["watch"], after_events=0), "connection_lost"),
    ],
    ids=["503x2", "500", "401", "403", "bad-json", "dropped"],
)
async def test_watch_failures_are_reported_then_the_watch_resumes_with_state_intact(
    api_server, kubeconfig, inject, reason
):
    """source_error for each failure, then the watch resumes: no relist, nothing lost."""
    add_nodes(api_server, 3)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        inject(api_server)
        api_server.drop_watches()
        await eventually(lambda: reason in listener.errors, what=reason)
        set_address(api_server, "worker-2", "10.240.0.222")
        await eventually(lambda: listener.of("changed"), what="a change after recovery")
    assert sorted(listener.nodes) == ["worker-0", "worker-1", "worker-2"]
    assert address_of(listener.nodes, "worker-2") == "10.240.0.222"
    assert len(requests_of(api_server, "list")) == 1
    assert listener.of("recovered")


@pytest.mark.parametrize(
    ("inject", "reason"),
    [
        (lambda s: s.fail_next(3, status=503, verbs=["list"]), "server_error"),
        (lambda s: s.fail_next(1, status=401, verbs=["list"]), "unauthorized"),
        (lambda s: s.garbage_next(1, verbs=["list"]), "bad_response"),
        (lambda s: s.drop_next(1, verbs=["list"]), "connection_lost"),
    ],
    ids=["503x3", "401", "bad-json", "dropped"],
)
async def test_a_failing_first_list_is_retried_until_it_succeeds(
    api_server, kubeconfig, inject, reason
):
    """The API not being ready yet is an error to report and retry, never a crash."""
    add_nodes(api_server, 2)
    inject(api_server)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
    assert reason in listener.errors
    assert sorted(listener.nodes) == ["worker-0", "worker-1"]
    assert listener.calls[0][0] == "error"


async def test_a_server_that_expires_every_watch_is_backed_off_and_reported(api_server, kubeconfig):
    """410 right after each relist must not spin: after a few, it is an error with backoff."""
    add_nodes(api_server, 2)
    api_server.fail_next(6, status=410, verbs=["watch"])
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: "expired" in listener.errors, what="an expired error")
        await eventually(lambda: api_server.watch_count == 1, what="a watch that works again")
    assert len(requests_of(api_server, "list")) == 7
    assert sorted(listener.nodes) == ["worker-0", "worker-1"]


async def test_a_list_page_over_the_size_cap_is_an_error_with_backoff(api_server, kubeconfig):
    """Issue 12: a LIST body was read whole (1 GB body, 1 GB RSS). Now reading stops at the
    cap: a clear error, a backoff, no sync from a partial page; within the cap it syncs."""
    add_nodes(api_server, 50)  # one page of ~20 KB
    listener = Listener()
    small = replace(FAST, max_page_bytes=8_000, backoff_base=0.2, backoff_cap=0.2)
    async with running(source_for(kubeconfig, listener, tuning=small)):
        await eventually(lambda: len(listener.errors) >= 2, what="two errors")
    assert set(listener.errors) == {"response_too_large"}
    assert listener.of("synced") == []
    lists = requests_of(api_server, "list")
    assert 2 <= len(lists) <= 6, "retried with a backoff, not in a tight loop"
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"), what="a sync within the default cap")


async def test_the_default_caps_fit_500_realistic_nodes_per_page(api_server, kubeconfig):
    """A real cluster's page of 500 Nodes (~10 KB each) and its watch events fit the defaults
    with a wide margin."""
    for i in range(500):
        api_server.add_object(
            "nodes", make_node(f"worker-{i}", addresses=[f"10.240.1.{i % 250}"], realistic=True)
        )
    listener = Listener()
    async with running(source_for(kubeconfig, listener, tuning=replace(FAST, read_timeout=30))):
        await eventually(lambda: listener.of("synced"), timeout=60, what="first sync")
        set_address(api_server, "worker-3", "10.240.2.3")
        await eventually(lambda: listener.of("changed"), what="a realistic watch event")
    assert len(listener.of("synced")[0][1]) == 500 and listener.errors == []
    assert Tuning().max_page_bytes >= 8 * 500 * 12_000
    assert Tuning().max_line_bytes >= 2 * 1_572_864  # etcd's default object size limit


async def test_a_watch_line_over_the_size_cap_is_an_error_then_a_relist(api_server, kubeconfig):
    """Issue 12: a watch line grew without limit (an endless line: 170 MB). Now a line over the
    cap is an error with a backoff, and the source relists (pages have their own, larger cap)
    instead of re-watching into the same oversized event; events flow again after that."""
    add_nodes(api_server, 3)
    listener = Listener()
    small = replace(FAST, max_line_bytes=20_000)
    async with running(source_for(kubeconfig, listener, tuning=small)):
        await eventually(lambda: listener.of("synced"))
        api_server.add_object(
            "nodes",
            make_node("huge", addresses=["10.240.9.9"], labels={"padding": "x" * 50_000}),
        )
        await eventually(lambda: "huge" in listener.nodes, timeout=15, what="huge via a relist")
        assert "response_too_large" in listener.errors
        assert len(listener.of("synced")) == 2
        set_address(api_server, "worker-2", "10.240.0.222")
        await eventually(
            lambda: address_of(listener.nodes, "worker-2") == "10.240.0.222",
            timeout=15,
            what="events after the oversized one",
        )


async def test_a_failing_second_page_keeps_the_last_good_state(api_server, kubeconfig):
    """A relist that breaks midway publishes nothing partial; it is retried as a whole."""
    add_nodes(api_server, 700)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        with api_server.transaction():
            api_server.delete_object("nodes", "worker-0")
            api_server.compact()
            api_server.fail_next(1, status=500, verbs=["list"])  # the relist's first page
        await eventually(lambda: len(listener.of("synced")) == 2, what="the relist")
    assert listener.errors == ["server_error"]
    assert len(listener.of("synced")[1][1]) == 699


async def test_an_outage_is_reported_and_the_watch_catches_up_afterwards(api_server, kubeconfig):
    """Connection refused for a while: errors, last state kept, changes made meanwhile arrive."""
    add_nodes(api_server, 3)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        api_server.outage()
        await eventually(lambda: "unreachable" in listener.errors, what="connection refused")
        assert sorted(listener.nodes) == ["worker-0", "worker-1", "worker-2"]
        api_server.delete_object("nodes", "worker-0")  # while nobody can watch
        api_server.restore()
        await eventually(lambda: "worker-0" not in listener.nodes, what="the missed delete")
    assert sorted(listener.nodes) == ["worker-1", "worker-2"]
    assert len(requests_of(api_server, "list")) == 1
    assert listener.of("recovered")


async def test_errors_are_logged_as_one_line_each_with_reason_and_retry(api_server, kubeconfig):
    """Operators get one `api_error` line per failure: reason, status, message, retry_in."""
    from structlog.testing import capture_logs

    add_nodes(api_server, 1)
    api_server.fail_next(1, status=503, verbs=["list"])
    listener = Listener()
    with capture_logs() as logs:
        async with running(source_for(kubeconfig, listener)):
            await eventually(lambda: listener.of("synced"))
    [line] = [entry for entry in logs if entry["event"] == "api_error"]
    assert line["reason"] == "server_error"
    assert line["status"] == 503
    assert line["message"] == "injected fault: ServiceUnavailable"
    assert 0 <= line["retry_in"] <= FAST.backoff_cap
    assert line["path"] == "/api/v1/nodes"


async def test_the_backoff_is_capped(api_server, kubeconfig):
    """However long the outage, retries stay within backoff_cap of each other."""
    listener = Listener()
    api_server.outage()
    tuning = replace(FAST, backoff_base=0.01, backoff_cap=0.1)
    async with running(source_for(kubeconfig, listener, tuning=tuning)):
        await eventually(lambda: len(listener.errors) >= 12, what="a dozen retries")
    assert set(listener.errors) == {"unreachable"}


async def test_a_broken_kubeconfig_is_an_error_that_is_retried(api_server, kubeconfig):
    """A kubeconfig being rewritten (or broken) is reported and re-read on the next try."""
    good = kubeconfig.read_text()
    kubeconfig.write_text("{not yaml: [")
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: "config_error" in listener.errors, what="config_error")
        kubeconfig.write_text(good)
        await eventually(lambda: listener.of("synced"))
    assert str(kubeconfig) in listener.of("error")[0][2]


# --------------------------------------------------------------------------- selectors, credentials


async def test_a_label_selector_limits_the_nodes_on_the_server_side(api_server, kubeconfig):
    """Only selected nodes are listed and watched; a node relabelled out of it disappears."""
    for name, role in [("controller-0", "cp"), ("worker-1", "worker"), ("worker-2", "worker")]:
        api_server.add_object(
            "nodes", make_node(name, addresses=["10.240.0.1"], labels={"role": role})
        )
    listener = Listener()
    async with running(source_for(kubeconfig, listener, label_selector="role=worker")):
        await eventually(lambda: listener.of("synced"))
        assert sorted(listener.nodes) == ["worker-1", "worker-2"]
        relabelled = make_node("worker-2", addresses=["10.240.0.1"], labels={"role": "cp"})
        api_server.modify_object("nodes", relabelled)
        await eventually(lambda: "worker-2" not in listener.nodes, what="worker-2 unselected")
        api_server.add_object(
            "nodes", make_node("worker-3", addresses=["10.240.0.3"], labels={"role": "worker"})
        )
        await eventually(lambda: "worker-3" in listener.nodes, what="worker-3 added")
    assert sorted(listener.nodes) == ["worker-1", "worker-3"]
    assert {r.query.get("labelSelector") for r in api_server.requests} == {"role=worker"}


async def test_restart_picks_up_a_rotated_token_and_relists(api_server, kubeconfig):
    """Credentials rotated in the kubeconfig: restart() rebuilds the client and relists."""
    add_nodes(api_server, 2)
    listener = Listener()
    source = source_for(kubeconfig, listener)
    async with running(source):
        await eventually(lambda: listener.of("synced"))
        api_server.authorize("rotated-token")
        api_server.write_kubeconfig(kubeconfig, token="rotated-token")
        api_server.revoke(API_TOKEN)
        source.restart()
        await eventually(lambda: len(listener.of("synced")) == 2, what="the relist")
        await eventually(lambda: requests_of(api_server, "watch")[-1].token == "rotated-token")
    assert requests_of(api_server, "list")[-1].token == "rotated-token"
    assert listener.errors == []


async def test_a_revoked_token_is_an_error_until_the_kubeconfig_has_a_new_one(
    api_server, kubeconfig
):
    """401 makes the source re-read the kubeconfig before each retry, without a restart()."""
    add_nodes(api_server, 2)
    listener = Listener()
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"))
        api_server.revoke(API_TOKEN)
        api_server.drop_watches()
        await eventually(lambda: "unauthorized" in listener.errors, what="401")
        api_server.authorize("new-token")
        api_server.write_kubeconfig(kubeconfig, token="new-token")
        await eventually(lambda: listener.of("recovered"), what="recovery")
        api_server.delete_object("nodes", "worker-0")
        await eventually(lambda: listener.of("changed"))
    assert requests_of(api_server, "watch")[-1].token == "new-token"
    assert sorted(listener.nodes) == ["worker-1"]


# --------------------------------------------------------------------------- cancellation

# Far below what the task is blocked on (a 300 s watch, a 30 s backoff), far above a busy
# machine's scheduling delays: ending within it means cancellation did not wait.
CANCEL_CEILING = 10.0


async def test_cancellation_returns_promptly_while_a_watch_is_blocked(api_server, kubeconfig):
    """Shutdown must not wait for a long watch (300 s here): the cancelled task ends."""
    add_nodes(api_server, 1)
    listener = Listener()
    tuning = replace(FAST, watch_timeout=300, read_timeout=300)
    task = asyncio.create_task(source_for(kubeconfig, listener, tuning=tuning).run())
    await eventually(lambda: listener.of("synced"))
    await eventually(lambda: api_server.watch_count == 1, what="an open watch")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=CANCEL_CEILING)
    await eventually(lambda: api_server.watch_count == 0, what="the watch connection closed")


async def test_cancellation_during_backoff_is_prompt_and_silent(api_server, kubeconfig):
    """Cancelled while waiting 30 s to retry: ends without the wait, no callbacks afterwards."""
    api_server.outage()
    listener = Listener()
    tuning = replace(FAST, backoff_base=30, backoff_cap=30)
    task = asyncio.create_task(source_for(kubeconfig, listener, tuning=tuning).run())
    await eventually(lambda: listener.errors, what="the first error")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=CANCEL_CEILING)
    calls = len(listener.calls)
    api_server.restore()
    await asyncio.sleep(0.2)
    assert len(listener.calls) == calls


async def test_a_source_can_run_again_after_cancellation(api_server, kubeconfig):
    """run() after a cancelled run() starts over with a fresh LIST."""
    add_nodes(api_server, 1)
    listener = Listener()
    source = source_for(kubeconfig, listener)
    async with running(source):
        await eventually(lambda: listener.of("synced"))
    api_server.add_object("nodes", make_node("worker-5", addresses=["10.240.0.5"]))
    async with running(source):
        await eventually(lambda: len(listener.of("synced")) == 2)
    assert sorted(listener.nodes) == ["worker-0", "worker-5"]


# --------------------------------------------------------------------------- one-shot and config


def test_list_nodes_returns_every_node_and_the_list_version(api_server, kubeconfig):
    """`nodehosts dump` gets all nodes (paged) and the version they are from."""
    add_nodes(api_server, 1001)
    nodes, version = list_nodes(load_client_configuration(kubeconfig))
    assert len(nodes) == 1001
    assert version == api_server.resource_version
    assert len(requests_of(api_server, "list")) == 3


def test_list_nodes_honours_the_label_selector(api_server, kubeconfig):
    """The selector is applied by the server."""
    api_server.add_object("nodes", make_node("a", addresses=["10.0.0.1"], labels={"pool": "x"}))
    api_server.add_object("nodes", make_node("b", addresses=["10.0.0.2"], labels={"pool": "y"}))
    nodes, _ = list_nodes(load_client_configuration(kubeconfig), label_selector="pool!=y")
    assert list(nodes) == ["a"]


@pytest.mark.parametrize(
    ("status", "reason"), [(500, "server_error"), (401, "unauthorized"), (403, "forbidden")]
)
def test_list_nodes_raises_a_clear_error(api_server, kubeconfig, status, reason):
    """One-shot: no retries, an exception that says what went wrong."""
    api_server.fail_next(1, status=status)
    with pytest.raises(KubeApiError) as caught:
        list_nodes(load_client_configuration(kubeconfig))
    assert caught.value.reason == reason
    assert caught.value.status == status


def test_list_nodes_against_a_server_that_is_down_says_unreachable(api_server, kubeconfig):
    """Connection refused is reported as such, naming the server."""
    configuration = load_client_configuration(kubeconfig)
    api_server.outage()
    with pytest.raises(KubeApiError) as caught:
        list_nodes(configuration, tuning=FAST)
    assert caught.value.reason == "unreachable"
    assert api_server.url in caught.value.message


def test_a_missing_kubeconfig_is_named_in_the_error(tmp_path):
    """KubeConfigError says which file."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(KubeConfigError, match=str(missing)):
        load_client_configuration(missing)


@pytest.mark.parametrize(
    "text",
    ["{not yaml: [", "apiVersion: v1\nkind: Config\n", "[1, 2, 3]\n"],
    ids=["bad-yaml", "no-contexts", "not-a-mapping"],
)
def test_a_broken_kubeconfig_is_named_in_the_error(tmp_path, text):
    """Whatever the loader trips over, the error names the file."""
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(KubeConfigError, match=str(path)):
        load_client_configuration(path)


def test_without_any_configuration_the_error_says_what_was_tried(tmp_path):
    """No --kubeconfig, not in a pod, no default file: say so."""
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST"):
        load_client_configuration(None, environ={"KUBECONFIG": str(tmp_path / "none")})


def test_the_kubeconfig_environment_variable_is_the_default(api_server, kubeconfig):
    """$KUBECONFIG is used when no file is given and we are not in a pod."""
    configuration = load_client_configuration(None, environ={"KUBECONFIG": str(kubeconfig)})
    assert configuration.host == api_server.url


def test_the_client_holder_rebuilds_after_bad_credentials_never_from_a_stale_load(
    api_server, tmp_path
):
    """The transport is kept across requests and errors that are not about credentials; a 401
    or a drop() rebuilds it from the kubeconfig as it is then, also when the drop (rotated
    credentials) comes while a configuration is being loaded: that load is not kept."""
    path = api_server.write_kubeconfig(tmp_path / "rotating", token="rotated-out")
    loads = 0

    def configure() -> Any:
        nonlocal loads
        loads += 1
        configuration = load_client_configuration(path)
        if loads == 1:  # the token rotates while this (old) one is being loaded
            api_server.write_kubeconfig(path, token=API_TOKEN)
            holder.drop()
        return configuration

    holder = ClientHolder(configure, connect_timeout=1, read_timeout=5)
    transport = holder.current()
    assert transport.request_json("GET", "/api/v1/nodes")["kind"] == "NodeList"  # not a 401
    assert loads == 2
    holder.failed(KubeApiError("server_error", "a 500", 500))
    assert holder.current() is transport
    holder.failed(KubeApiError("unauthorized", "a 401", 401))
    assert holder.current() is not transport
    assert loads == 3


def test_credential_files_follow_the_configuration_that_is_loaded(api_server, tmp_path):
    """The files watched for rotation are those of the kubeconfig the client loads: $KUBECONFIG
    (every file of the list, with what its context references) unless --kubeconfig is given;
    in a pod, the service account's CA (a rotated token is re-read by the client itself)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = api_server.write_kubeconfig(tmp_path / "a" / "kubeconfig", token="x")
    second = tmp_path / "b" / "kubeconfig"
    second.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1', "
        "certificate-authority: ca.pem}}]\n"
        "users: [{name: u, user: {tokenFile: ../token}}]\n"
    )
    # The loader reads every user's files of a merged list: the ones listed below.
    (tmp_path / "token").write_text("y")
    (tmp_path / "b" / "ca.pem").write_text("")
    environ = {"KUBECONFIG": f"{first}{os.pathsep}{second}"}
    assert credential_files(None, environ) == {
        first,
        second,
        tmp_path / "b" / "ca.pem",
        tmp_path / "token",
    }
    assert load_client_configuration(None, environ=environ).host
    assert credential_files(second, environ) == {
        second,
        tmp_path / "b" / "ca.pem",
        tmp_path / "token",
    }
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.32.0.1", "KUBECONFIG": str(first)}
    assert credential_files(None, in_pod) == {SERVICE_ACCOUNT_DIR / "ca.crt"}


def test_in_cluster_configuration_uses_the_service_account_over_tls(tmp_path):
    """In a pod: KUBERNETES_SERVICE_HOST/PORT plus the service account token and CA."""
    with FakeApiServer(tokens=["sa-token"], tls=True) as server:
        server.add_object("nodes", make_node("worker-1", addresses=["10.240.0.101"]))
        assert server.ca_pem is not None
        (tmp_path / "token").write_text("sa-token")
        (tmp_path / "ca.crt").write_bytes(server.ca_pem)
        configuration = load_client_configuration(
            None,
            environ={
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(server.port),
            },
            service_account_dir=tmp_path,
        )
        nodes, _ = list_nodes(configuration)
    assert list(nodes) == ["worker-1"]


def test_in_cluster_without_a_service_account_is_a_clear_error(tmp_path):
    """KUBERNETES_SERVICE_HOST set but no token file: name the directory."""
    with pytest.raises(KubeConfigError, match=str(tmp_path)):
        load_client_configuration(
            None,
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
            service_account_dir=tmp_path,
        )


def test_a_tls_server_is_verified_against_the_kubeconfig_ca(tmp_path):
    """TLS with the CA from the kubeconfig works; a server the CA did not sign is refused."""
    with FakeApiServer(tokens=["t"], tls=True) as server, FakeApiServer(tls=True) as other:
        server.add_object("nodes", make_node("worker-1", addresses=["10.240.0.101"]))
        path = server.write_kubeconfig(tmp_path / "kubeconfig", token="t")
        nodes, _ = list_nodes(load_client_configuration(path))
        assert list(nodes) == ["worker-1"]
        configuration = load_client_configuration(path)
        configuration.host = other.url  # same CA file, a different (untrusted) server
        with pytest.raises(KubeApiError) as caught:
            list_nodes(configuration, tuning=FAST)
    assert caught.value.reason == "tls_error"


# --------------------------------------------------------------------------- LIST decoding


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "pretty"])
@pytest.mark.parametrize("metadata_first", [True, False], ids=["apiserver-order", "items-first"])
def test_a_list_page_is_read_in_any_layout(indent, metadata_first):
    """Items are decoded one by one when metadata comes first; other layouts still work."""
    import json

    from nodehosts.adapters.kube.listjson import decode_list

    items = [make_node(f"n{i}", addresses=[f"10.0.0.{i}"]) for i in range(3)]
    metadata = {"resourceVersion": "7", "continue": "abc"}
    document = (
        {"kind": "NodeList", "metadata": metadata, "items": items}
        if metadata_first
        else {"kind": "NodeList", "items": items, "metadata": metadata}
    )
    got_metadata, got_items = decode_list(json.dumps(document, indent=indent).encode(), "/x")
    assert got_metadata == metadata
    assert list(got_items) == items


@pytest.mark.parametrize(
    "body",
    [b'{"metadata":{"resourceVersion":"1"},"items":[{"a":1},', b"[]", b"{", b"\xff"],
    ids=["truncated-items", "not-an-object", "truncated", "not-utf8"],
)
def test_a_broken_list_page_is_a_bad_response(body):
    """Broken JSON anywhere in a page is a bad_response, also when found while iterating."""
    from nodehosts.adapters.kube.listjson import decode_list

    with pytest.raises(KubeApiError) as caught:
        _, items = decode_list(body, "/api/v1/nodes")
        list(items)
    assert caught.value.reason == "bad_response"
