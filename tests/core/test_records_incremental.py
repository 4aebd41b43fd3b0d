"""The incremental record set: `RecordIndex` always equals `build_publication` of its inputs,
and says exactly which hosts changed, so sinks can re-render only those."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodehosts.core.dns.answer import Answerer
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.hosts import HostsRenderer, render_hosts
from nodehosts.core.model import Host, NodeDecision, NodeInfo, Publication, SkipReason
from nodehosts.core.records import (
    RecordIndex,
    RecordPolicy,
    build_publication,
    publication_counts,
)

POLICY = RecordPolicy()
ZONE = ZoneConfig(domain="node.internal")
ip = ipaddress.ip_address

# Small pools, so that names, aliases and addresses collide often: a dotted name that is
# another node's FQDN, Hostnames several nodes report, static hosts written bare or as a FQDN.
_NAMES = [
    "worker-0",
    "worker-1",
    "worker-2",
    "lb-0",
    "db.node.internal",
    "worker-1.node.internal",
    "evil.example",
    "Bad_",
]
_ALIASES = [None, "worker-0", "worker-1", "lb-0", "db", "db.node.internal", "localhost", "x"]
_ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.40", "fd00::1", "127.0.0.1", "junk"]
_STATIC = [
    Host(("lb-0",), (ip("10.0.0.40"),), "static"),
    Host(("db", "worker-2"), (ip("10.0.0.3"),), "static"),
    Host(("lb-0.node.internal",), (ip("10.0.0.41"),), "static"),
    Host(("worker-0.node.internal",), (ip("10.0.0.42"),), "static"),
]


def _node(
    name: str, alias: str | None, addresses: list[str], ready: bool, cordoned: bool = False
) -> NodeInfo:
    pairs = [("InternalIP", a) for a in addresses]
    if alias is not None:
        pairs.append(("Hostname", alias))
    return NodeInfo(name, tuple(pairs), ready, cordoned)


_nodes = st.builds(
    _node,
    st.sampled_from(_NAMES),
    st.sampled_from(_ALIASES),
    st.lists(st.sampled_from(_ADDRESSES), max_size=2),
    st.booleans(),
    st.booleans(),
)
# Nodes outside the label selection: the selected ones' names too (the caller may pass the
# whole cluster), a hidden node holding a selected node's alias or FQDN, and its own aliases.
_hidden = st.dictionaries(
    st.sampled_from([*_NAMES, "controller-0", "x", "db"]),
    st.sampled_from([*_ALIASES, "worker-2"]),
    max_size=3,
)
_steps = st.one_of(
    st.tuples(st.just("set"), _nodes),
    st.tuples(st.just("hidden"), _hidden),
    st.tuples(st.just("delete"), st.sampled_from(_NAMES)),
    st.tuples(st.just("static"), st.lists(st.sampled_from(_STATIC), max_size=2, unique=True)),
    st.tuples(st.just("policy"), st.tuples(st.booleans(), st.booleans())),
)


def _apply(
    hosts: tuple[Host, ...], removed: tuple[Host, ...], added: tuple[Host, ...]
) -> tuple[Host, ...]:
    gone = {id(host) for host in removed}
    kept = [host for host in hosts if id(host) not in gone]
    return tuple(sorted([*kept, *added], key=lambda host: host.canonical))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.lists(_nodes, max_size=5),
    steps=st.lists(st.lists(_steps, min_size=1, max_size=3), min_size=1, max_size=12),
    hints=st.booleans(),
    hidden=_hidden,
)
def test_the_index_equals_a_full_build_after_any_sequence_of_changes(
    start: list[NodeInfo],
    steps: list[list[tuple[str, object]]],
    hints: bool,
    hidden: dict[str, str | None],
) -> None:
    """Adds, address moves, renames via Hostname, deletes (and re-adds, which reorder the
    mapping), with or without the caller naming the changed nodes, name and address collisions with
    nodes and static hosts, Hostnames several nodes report (nobody's), skipped nodes holding
    their names, Nodes leaving and joining the label selection (`hidden`), static host and
    policy edits: after every batch the
    publication is exactly the full build's, the reported host changes turn the previous
    record set into the new one, and the hosts text and DNS answers built from those changes
    are exactly the ones built from scratch."""
    nodes = {node.name: node for node in start}
    static: list[Host] = []
    policy = POLICY
    index = RecordIndex(policy, static)
    previous = index.update(nodes, static, policy, hidden=hidden)
    assert previous == build_publication(nodes.values(), static, policy, hidden)
    assert index.counts() == publication_counts(previous)
    assert [name for name, _, _ in index.decision_changes()] == sorted(nodes)
    renderer = HostsRenderer()
    renderer.render(previous.records, index.changes())
    answerer = Answerer.for_records(previous.records, ZONE, serial=1)
    for batch in steps:
        nodes = dict(nodes)  # a new snapshot per batch, as the inventory hands over
        touched: list[str] = []  # what a source that knows would say changed
        for kind, value in batch:
            if kind == "set":
                assert isinstance(value, NodeInfo)
                nodes[value.name] = value
                touched.append(value.name)
            elif kind == "delete":
                nodes.pop(str(value), None)
                touched.append(str(value))
            elif kind == "hidden":
                hidden = dict(value)  # type: ignore[call-overload]
            elif kind == "static":
                static = list(value)  # type: ignore[call-overload]
            else:
                not_ready, cordoned = value  # type: ignore[misc]
                policy = RecordPolicy(exclude_not_ready=not_ready, exclude_unschedulable=cordoned)
        got = index.update(nodes, static, policy, touched if hints else None, hidden)
        assert got == build_publication(nodes.values(), static, policy, hidden)
        assert index.counts() == publication_counts(got)
        changes = index.changes()
        if changes is not None:
            assert changes.before is previous.records and changes.after is got.records
            assert (
                _apply(previous.records.hosts, changes.removed, changes.added) == got.records.hosts
            )
            assert all(host in previous.records.hosts for host in changes.removed)
        old = {d.node: d for d in previous.decisions}
        new = {d.node: d for d in got.decisions}
        assert index.decision_changes() == [
            (name, old.get(name), new.get(name))
            for name in sorted(old.keys() | new.keys())
            if old.get(name) != new.get(name)
        ]
        # The sinks fed with the changes give what they give from scratch.
        assert renderer.render(got.records, changes) == render_hosts(got.records)
        assert renderer.addresses == got.records.address_count()
        serial = answerer.table.serial + 1
        answerer = Answerer.for_records(  # as DnsService builds it: the previous one is dropped
            got.records, ZONE, serial=serial, previous=answerer, changes=changes, adopt=True
        )
        fresh = Answerer.for_records(got.records, ZONE, serial=serial)
        assert answerer.table.answers == fresh.table.answers
        assert answerer.table.existing == fresh.table.existing
        previous = got


def test_a_node_change_reports_only_the_hosts_it_touches() -> None:
    """One worker moving costs one host out and one in, not a diff of the cluster."""
    nodes = {
        f"worker-{i}": _node(f"worker-{i}", None, [f"10.0.1.{i}"], True) for i in range(1, 100)
    }
    index = RecordIndex(POLICY)
    before = index.update(nodes, [], POLICY)
    assert index.changes() is None  # the first build: everything is new
    assert len(index.decision_changes()) == 99
    nodes = {**nodes, "worker-7": _node("worker-7", None, ["10.0.2.7"], True)}
    after = index.update(nodes, [], POLICY)
    changes = index.changes()
    assert changes is not None
    assert [h.addresses for h in changes.removed] == [(ip("10.0.1.7"),)]
    assert [h.addresses for h in changes.added] == [(ip("10.0.2.7"),)]
    unchanged = [h for h in after.records.hosts if h.node != "worker-7"]
    assert all(any(h is b for b in before.records.hosts) for h in unchanged)
    assert index.decision_changes() == [
        ("worker-7", _decision_of(before, "worker-7"), _decision_of(after, "worker-7"))
    ]
    unchanged_since = index.changes()
    assert unchanged_since is not None and not unchanged_since.removed + unchanged_since.added
    assert index.decision_changes() == []


def _decision_of(publication: Publication, node: str) -> NodeDecision:
    return {d.node: d for d in publication.decisions}[node]


def test_a_hostname_alias_takes_a_free_name_and_gives_it_back_to_its_owner() -> None:
    """worker-1 claims `lb-0` as its Hostname while no one has it; when the node lb-0 joins it
    wins its own name (a node name beats an alias), and worker-1's decision says so."""
    index = RecordIndex(POLICY)
    nodes = {"worker-1": _node("worker-1", "lb-0", ["10.0.0.1"], True)}
    first = index.update(nodes, [], POLICY)
    assert first.records.by_name()["lb-0"].node == "worker-1"
    nodes = {**nodes, "lb-0": _node("lb-0", None, ["10.0.0.40"], True)}
    second = index.update(nodes, [], POLICY)
    assert second == build_publication(nodes.values(), [], POLICY)
    assert second.records.by_name()["lb-0"].node == "lb-0"
    decision = {d.node: d for d in second.decisions}["worker-1"]
    assert decision.reason is not None and "lost name 'lb-0' to node 'lb-0'" in decision.reason
    del nodes["lb-0"]
    third = index.update(nodes, [], POLICY)
    assert third == first


def test_deleting_and_re_adding_a_node_in_a_large_cluster_stays_incremental() -> None:
    """A deletion (or a node deleted and re-added, which moves it to the end of the mapping)
    in a 400-node cluster is one host out (and in), not a rebuild of everything."""
    nodes = {
        f"w-{i:03}": _node(f"w-{i:03}", None, [f"10.0.{i // 200}.{i % 200 + 1}"], True)
        for i in range(400)
    }
    index = RecordIndex(POLICY)
    index.update(nodes, [], POLICY)
    index.changes()
    for step in range(3):
        nodes = dict(nodes)
        if step == 0:
            del nodes["w-001"]
        elif step == 1:
            nodes["w-001"] = _node("w-001", None, ["10.1.0.1"], True)
        else:
            nodes["w-002"] = _node("w-002", None, ["10.1.0.2"], True)
        got = index.update(nodes, [], POLICY)
        assert got == build_publication(nodes.values(), [], POLICY)
        changes = index.changes()
        assert changes is not None
        assert len(changes.removed) + len(changes.added) == [1, 1, 2][step]  # out; in; out+in


def test_the_counts_follow_each_change_without_walking_the_cluster() -> None:
    """What metrics and the systemd status show: nodes published and skipped (by reason),
    hosts, addresses per family, collisions; kept per change, equal to a full count."""
    nodes = {
        "a": _node("a", None, ["10.0.0.1", "2001:db8::1"], True),
        "b": _node("b", None, ["10.0.0.2"], True),
        "c": _node("c", None, [], True),  # no address: skipped
        "d": _node("d", "a", ["10.0.0.4"], True),  # its Hostname collides with a's name
    }
    policy = RecordPolicy(exclude_not_ready=True)
    index = RecordIndex(policy)
    first = index.update(nodes, [], policy)
    counts = index.counts()
    assert counts == publication_counts(first)
    assert (counts.nodes, counts.published, counts.hosts, counts.ipv4, counts.ipv6) == (
        4,
        3,
        3,
        3,
        1,
    )
    assert dict(counts.skipped) == {SkipReason.NO_ADDRESS: 1}
    assert counts.collisions == 2  # a.node.internal and a
    nodes = {
        **nodes,
        "a": _node("a", None, ["10.0.0.1"], False),
        "c": _node("c", None, ["2001:db8::2"], True),
    }
    second = index.update(nodes, [], policy)
    counts = index.counts()
    assert counts == publication_counts(second)
    assert dict(counts.skipped) == {SkipReason.NOT_READY: 1}
    assert (counts.published, counts.ipv4, counts.ipv6, counts.collisions) == (3, 2, 1, 2)
