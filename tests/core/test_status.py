"""The daemon's status as a pure value: every transition, readiness, STATUS= text and dump part."""

from __future__ import annotations

import ipaddress

import pytest

from nodehosts.core import status as st
from nodehosts.core.model import Host, NodeDecision, NodeInfo, Publication, RecordSet
from nodehosts.core.records import RecordIndex, RecordPolicy, publication_counts
from nodehosts.core.status import ApiError, Source, Status

T0 = 1_767_268_800.0  # 2026-01-01T12:00:00Z


def _records(*names: str) -> RecordSet:
    return RecordSet(
        tuple(
            Host((name,), (ipaddress.ip_address(f"10.240.0.{10 + i}"),), "node")
            for i, name in enumerate(names)
        )
    )


def _publication(records: RecordSet, skipped: int = 0) -> Publication:
    decisions = tuple(
        NodeDecision(h.names[0], h.names, h.addresses, True, False, True) for h in records.hosts
    ) + tuple(
        NodeDecision(f"bad-{i}", (), (), False, False, False, "not ready") for i in range(skipped)
    )
    return Publication(records=records, decisions=decisions)


def test_a_fresh_status_serves_nothing_and_is_not_ready() -> None:
    status = Status()
    assert status.source is Source.NONE
    assert (status.ready, status.stale, status.synced, status.generation) == (
        False,
        False,
        False,
        0,
    )
    assert status.next_generation == 1
    assert st.readiness(status) == (False, "waiting for the first complete list of Nodes")
    assert st.systemd_status(status) == "waiting for the first list of Nodes"


def test_restored_sets_the_generation_and_nothing_else() -> None:
    status = st.restored(Status(), generation=41)
    assert status == Status(generation=41)
    assert status.next_generation == 42


def test_serving_saved_records_is_stale_and_not_ready() -> None:
    saved = _records("worker-0", "worker-1")
    status = st.serving_saved(Status(), saved, saved_at=T0)
    assert (status.source, status.stale, status.ready) == (Source.SAVED, True, False)
    assert status.records == saved
    assert st.systemd_status(status) == (
        "serving saved records, waiting for the API: 2 hosts saved 2026-01-01T12:00:00Z"
    )
    assert st.readiness(status) == (False, "serving saved records until the first sync")
    failing = st.api_failed(status, "unreachable", "connection refused", at=T0 + 5)
    assert st.systemd_status(failing) == (
        "serving saved records, API unreachable (unreachable): 2 hosts saved 2026-01-01T12:00:00Z"
    )
    assert st.readiness(failing) == (
        False,
        "serving saved records until the first sync (API error: unreachable)",
    )


def test_an_api_error_before_the_first_list_is_shown_then_cleared_by_a_sync() -> None:
    status = st.api_failed(Status(), "forbidden", "403", at=T0)
    assert status.last_error == ApiError("forbidden", "403", T0)
    assert st.systemd_status(status) == "waiting for the first list of Nodes; API error: forbidden"
    assert st.readiness(status) == (
        False,
        "waiting for the first complete list of Nodes (API error: forbidden)",
    )
    synced = st.synced(status, "7", at=T0 + 1)
    assert (synced.synced, synced.resource_version, synced.last_sync) == (True, "7", T0 + 1)
    assert synced.last_error is None
    assert st.systemd_status(synced) == "publishing the first complete list of Nodes"
    assert not synced.ready


def test_api_recovered_clears_the_error_only() -> None:
    status = st.synced(Status(), "1", at=T0)
    failing = st.api_failed(status, "unreachable", "refused", at=T0 + 1)
    assert st.api_recovered(failing) == status


def test_changed_moves_the_resource_version_and_last_sync() -> None:
    status = st.changed(st.synced(Status(), "1", at=T0), "2", at=T0 + 3)
    assert (status.resource_version, status.last_sync) == ("2", T0 + 3)
    assert status.generation == 0  # nothing is published by an event alone


def test_the_first_publication_makes_it_ready_and_counts_a_generation() -> None:
    records = _records("worker-0")
    status = st.published(st.synced(Status(), "1", at=T0), _publication(records, skipped=1))
    assert (status.source, status.ready, status.stale, status.generation) == (
        Source.LIVE,
        True,
        False,
        1,
    )
    assert status.records == records
    assert st.readiness(status) == (True, "1 hosts published, generation 1")
    assert st.systemd_status(status) == (
        "1/2 nodes published, 1 hosts, generation 1, last sync 2026-01-01T12:00:00Z"
    )


def test_an_empty_first_publication_still_counts_a_generation() -> None:
    status = st.published(st.synced(Status(), "1", at=T0), _publication(RecordSet()))
    assert (status.ready, status.generation) == (True, 1)


def test_without_a_hosts_file_a_generation_is_a_different_record_set() -> None:
    first = st.published(Status(), _publication(_records("a")))
    same = st.published(first, _publication(_records("a")))
    other = st.published(same, _publication(_records("a", "b")))
    assert (first.generation, same.generation, other.generation) == (1, 1, 2)


def test_with_a_hosts_file_a_generation_is_a_write() -> None:
    start = st.restored(Status(), generation=9)
    unchanged = st.published(start, _publication(_records("a")), sinks_changed=False)
    assert (unchanged.ready, unchanged.generation) == (True, 9)
    written = st.published(unchanged, _publication(_records("a")), sinks_changed=True)
    assert written.generation == 10


def test_the_first_sync_replaces_saved_records_and_keeps_counting_from_them() -> None:
    saved = st.serving_saved(st.restored(Status(), generation=5), _records("a"), saved_at=T0)
    same = st.published(saved, _publication(_records("a")))
    assert (same.source, same.stale, same.generation) == (Source.LIVE, False, 5)
    other = st.published(saved, _publication(_records("b")))
    assert other.generation == 6


def test_evaluated_keeps_the_records_and_updates_the_counts() -> None:
    status = st.published(st.synced(Status(), "1", at=T0), _publication(_records("a")))
    evaluated = st.evaluated(status, _publication(_records("a"), skipped=2))
    assert (evaluated.records, evaluated.generation) == (status.records, status.generation)
    assert st.systemd_status(evaluated).startswith("1/3 nodes published, 1 hosts, generation 1")


def test_the_status_line_counts_come_from_the_record_index_and_agree_with_a_walk() -> None:
    """The STATUS= line shows the counts the publisher passes (`RecordIndex.counts()`, kept
    per change), and they are what walking the publication gives, through adds, a skip and
    a removal; without them, `published` and `evaluated` count by walking."""
    policy = RecordPolicy()
    nodes = {
        "worker-0": NodeInfo("worker-0", (("InternalIP", "10.240.0.10"),), True, False),
        "worker-1": NodeInfo("worker-1", (("InternalIP", "10.240.0.11"),), True, False),
    }
    index = RecordIndex(policy)
    status = st.synced(Status(), "1", at=T0)
    texts = []
    for change in (
        None,
        NodeInfo("worker-2", (("Hostname", "worker-2"),), True, False),  # skipped: no address
        NodeInfo("worker-3", (("InternalIP", "fd00::13"),), True, False),
        "worker-0",  # removed
    ):
        if isinstance(change, NodeInfo):
            nodes[change.name] = change
        elif change is not None:
            del nodes[change]
        publication = index.update(nodes, [], policy)
        kept = st.published(status, publication, counts=index.counts())
        walked = st.published(status, publication)
        assert kept.counts == walked.counts == publication_counts(publication)
        assert st.systemd_status(kept) == st.systemd_status(walked)
        assert st.evaluated(status, publication, index.counts()) == st.evaluated(
            status, publication
        )
        status = kept
        texts.append(st.systemd_status(status).split(",")[0])
    assert texts == [
        "2/2 nodes published",
        "2/3 nodes published",
        "3/4 nodes published",
        "2/3 nodes published",
    ]


def test_an_api_error_after_ready_is_appended_to_the_status_text() -> None:
    status = st.published(st.synced(Status(), "1", at=T0), _publication(_records("a")))
    failing = st.api_failed(status, "unreachable", "refused", at=T0 + 60)
    assert failing.ready  # the records stay published
    assert st.systemd_status(failing) == (
        "1/1 nodes published, 1 hosts, generation 1, last sync 2026-01-01T12:00:00Z"
        "; API error since 2026-01-01T12:01:00Z: unreachable"
    )
    assert st.readiness(failing) == (True, "1 hosts published, generation 1")


def test_state_saved_is_shown_in_the_dump() -> None:
    status = st.state_saved(Status(), at=T0)
    assert st.dump_fields(status, now=T0)["state_saved_at"] == "2026-01-01T12:00:00Z"


def test_dump_fields() -> None:
    status = st.api_failed(st.synced(Status(), "12", at=T0), "gone", "410", at=T0 + 2)
    assert st.dump_fields(status, now=T0 + 2.5) == {
        "ready": False,
        "stale": False,
        "synced": True,
        "generation": 0,
        "resource_version": "12",
        "last_sync": "2026-01-01T12:00:00Z",
        "last_sync_age_seconds": 2.5,
        "last_error": {"reason": "gone", "message": "410", "at": "2026-01-01T12:00:02Z"},
        "state_saved_at": None,
    }
    fresh = st.dump_fields(Status(), now=T0)
    assert (fresh["last_sync"], fresh["last_sync_age_seconds"], fresh["last_error"]) == (
        None,
        None,
        None,
    )


def test_status_is_immutable() -> None:
    with pytest.raises(AttributeError):
        Status().generation = 3  # type: ignore[misc]  # the point: frozen


# --- the cluster view (with a label selector: every Node, for the names outside it)


def test_selected_nodes_wait_for_the_list_of_every_node() -> None:
    selected = st.synced(Status(), "7", at=T0, selected=True)
    assert selected.synced and not selected.can_publish
    assert st.systemd_status(selected) == "waiting for the list of every Node (label selector)"
    assert st.readiness(selected) == (
        False,
        "waiting for the list of every Node (label selector)",
    )
    failing = st.cluster_failed(selected, "forbidden", "403", at=T0 + 1)
    assert failing.cluster_error == ApiError("forbidden", "403", T0 + 1)
    assert not failing.can_publish
    assert st.systemd_status(failing) == (
        "waiting for the list of every Node (label selector); API error: forbidden"
    )
    assert st.readiness(failing) == (
        False,
        "waiting for the list of every Node (label selector) (API error: forbidden)",
    )
    listed = st.cluster_listed(failing)
    assert listed.can_publish and listed.cluster_error is None
    assert st.systemd_status(listed) == "publishing the first complete list of Nodes"


def test_unselected_nodes_need_no_cluster_view() -> None:
    assert st.synced(Status(), "7", at=T0).can_publish
    assert not Status().can_publish  # nothing listed at all


def test_a_cluster_view_listed_first_lets_the_selected_list_publish_at_once() -> None:
    status = st.cluster_listed(st.cluster_started(Status()))
    assert not status.can_publish  # no Nodes yet
    assert st.synced(status, "3", at=T0, selected=True).can_publish


def test_a_restarted_view_blocks_publishing_until_it_lists_again() -> None:
    ready = st.published(
        st.cluster_listed(st.synced(Status(), "1", at=T0, selected=True)),
        _publication(_records("worker-0")),
    )
    assert ready.can_publish
    renewed = st.cluster_started(st.cluster_failed(ready, "unreachable", "refused", at=T0 + 1))
    assert not renewed.can_publish
    assert renewed.cluster_error is None
    assert renewed.ready  # the last publication stays served
    assert st.cluster_listed(renewed).can_publish


def test_the_views_error_shows_while_ready_and_goes_on_recovery() -> None:
    running = st.cluster_started(Status())
    ready = st.published(
        st.cluster_listed(st.synced(running, "1", at=T0, selected=True)),
        _publication(_records("worker-0")),
    )
    failing = st.cluster_failed(ready, "unreachable", "refused", at=T0 + 5)
    assert failing.can_publish  # listed once: its Nodes stay valid while it retries
    assert st.systemd_status(failing).endswith(
        "; cluster view API error since 2026-01-01T12:00:05Z: unreachable"
    )
    assert st.cluster_recovered(failing) == ready
    assert st.dump_fields(failing, now=T0 + 6)["cluster_view"] == {
        "listed": True,
        "last_error": {"reason": "unreachable", "message": "refused", "at": "2026-01-01T12:00:05Z"},
    }


def test_a_stopped_view_is_not_in_dump_and_leaves_no_error() -> None:
    status = st.cluster_failed(st.cluster_started(Status()), "forbidden", "403", at=T0)
    assert st.dump_fields(status, now=T0)["cluster_view"] == {
        "listed": False,
        "last_error": {"reason": "forbidden", "message": "403", "at": "2026-01-01T12:00:00Z"},
    }
    stopped = st.cluster_stopped(status)
    assert stopped == Status()
    assert "cluster_view" not in st.dump_fields(stopped, now=T0)


def test_saved_records_waiting_for_the_cluster_view_say_so() -> None:
    saved = st.serving_saved(Status(), _records("worker-0"), saved_at=T0)
    waiting = st.cluster_failed(
        st.synced(st.cluster_started(saved), "1", at=T0 + 1, selected=True),
        "forbidden",
        "403",
        at=T0 + 2,
    )
    assert st.systemd_status(waiting) == (
        "serving saved records, waiting for the list of every Node (label selector), "
        "API error: forbidden: 1 hosts saved 2026-01-01T12:00:00Z"
    )
    assert st.readiness(waiting) == (
        False,
        "serving saved records, waiting for the list of every Node (label selector)"
        " (API error: forbidden)",
    )
