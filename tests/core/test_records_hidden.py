"""Nodes outside the label selection keep their names (issue 12, the DNS side of item 2).

With `--label-selector` the daemon publishes from the selected Nodes only; the Nodes it does not
select are still Nodes of the cluster, and whoever registers a selected Node (anyone holding the
bootstrap token, with labels of their choosing) must not take their names: not as a Hostname
alias, not as a dotted name. The record policy takes them as `hidden` (name -> Hostname) and
ranks them exactly as skipped nodes: they hold their names and publish nothing.
"""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodehosts.core.model import Collision, Host, NodeInfo, Publication, SkipReason
from nodehosts.core.records import (
    RecordIndex,
    RecordPolicy,
    build_publication,
    expand_name,
    hidden_nodes,
)

POLICY = RecordPolicy()
DOMAIN = POLICY.domain


def node(name: str, alias: str | None = None, address: str = "10.240.0.101") -> NodeInfo:
    pairs: tuple[tuple[str, str], ...] = (("InternalIP", address),)
    if alias is not None:
        pairs += (("Hostname", alias),)
    return NodeInfo(name, pairs, True, False)


def publish(
    *nodes: NodeInfo, hidden: dict[str, str | None], statics: tuple[Host, ...] = ()
) -> Publication:
    return build_publication(nodes, statics, POLICY, hidden)


def names_of(publication: Publication, name: str) -> tuple[str, ...]:
    hosts = [h for h in publication.records.hosts if h.node == name]
    return hosts[0].names if hosts else ()


def decision_of(publication: Publication, name: str):
    (decision,) = (d for d in publication.decisions if d.node == name)
    return decision


def test_a_selected_node_cannot_take_a_hidden_nodes_name_as_its_hostname() -> None:
    """The issue's case: controller-0 is not selected; worker-9 reports Hostname controller-0.
    Neither `controller-0` nor its FQDN is published, and the decision says why."""
    publication = publish(node("worker-9", "controller-0"), hidden={"controller-0": None})
    assert names_of(publication, "worker-9") == ("worker-9.node.internal", "worker-9")
    reason = decision_of(publication, "worker-9").reason or ""
    assert "lost name 'controller-0' to node 'controller-0' (outside the label selector)" in reason
    assert "lost name 'controller-0.node.internal'" in reason
    assert Collision("controller-0", "hidden:controller-0", ("worker-9",)) in (
        publication.collisions
    )
    # Without the hidden node the alias is free, as before.
    assert "controller-0" in names_of(
        publish(node("worker-9", "controller-0"), hidden={}), "worker-9"
    )


def test_a_hostname_a_hidden_node_also_reports_is_nobodys() -> None:
    """Two Nodes reporting one Hostname: neither gets it, selected or not."""
    publication = publish(node("worker-1", "shared"), hidden={"worker-2": "shared"})
    assert "shared" not in publication.records.by_name()
    reason = decision_of(publication, "worker-1").reason or ""
    assert "the Hostname of more than one node" in reason
    assert "node 'worker-2' (outside the label selector)" in reason
    assert Collision("shared", None, ("worker-1", "hidden:worker-2")) in publication.collisions


def test_a_selected_nodes_own_name_beats_a_hidden_nodes_hostname() -> None:
    """A Node's own name stays its own, whoever else reports it as a Hostname."""
    publication = publish(node("worker-1"), hidden={"worker-2": "worker-1"})
    assert names_of(publication, "worker-1") == ("worker-1.node.internal", "worker-1")
    assert decision_of(publication, "worker-1").reason is None


def test_a_dotted_selected_node_cannot_take_a_hidden_nodes_fqdn() -> None:
    """`worker-2.node.internal` registered (and selected) while worker-2 is not selected: the
    FQDN stays worker-2's, as it would if both were selected; the node keeps nothing."""
    publication = publish(node("worker-2.node.internal"), hidden={"worker-2": None})
    assert publication.records.hosts == ()
    decision = decision_of(publication, "worker-2.node.internal")
    assert decision.skip is SkipReason.NAME_COLLISION
    assert "to node 'worker-2' (outside the label selector)" in (decision.reason or "")


def test_a_selected_bare_node_keeps_its_fqdn_from_a_hidden_dotted_node() -> None:
    """The converse: the shorter owner wins an equal-rank name, selected or hidden."""
    publication = publish(node("worker-2"), hidden={"worker-2.node.internal": None})
    assert names_of(publication, "worker-2") == ("worker-2.node.internal", "worker-2")


def test_a_hidden_entry_named_like_a_selected_node_is_ignored() -> None:
    """The whole cluster may be passed as `hidden`: a selected node is not hidden from itself
    (else its own Hostname would be "the Hostname of more than one node")."""
    selected = node("worker-1", "w1")
    publication = publish(selected, hidden={"worker-1": "w1", "worker-2": None})
    assert names_of(publication, "worker-1") == (
        "worker-1.node.internal",
        "worker-1",
        "w1.node.internal",
        "w1",
    )
    assert publication == publish(selected, hidden={"worker-2": None})


@pytest.mark.parametrize(
    ("hidden", "published"),
    [
        ({"worker-2": "W1"}, ("worker-1.node.internal", "worker-1")),  # lower-cased, as any
        ({"worker-2": "w1.node.internal"}, ("worker-1.node.internal", "worker-1", "w1")),
        # An invalid or refused name claims nothing, its Hostname included (as when selected).
        ({"Bad_Name": "w1"}, ("worker-1.node.internal", "worker-1", "w1.node.internal", "w1")),
        (
            {"x.cluster.local": "w1"},
            ("worker-1.node.internal", "worker-1", "w1.node.internal", "w1"),
        ),
        # A refused or invalid Hostname claims nothing.
        (
            {"worker-2": "w1.cluster.local"},
            ("worker-1.node.internal", "worker-1", "w1.node.internal", "w1"),
        ),
        ({"worker-2": "w1_"}, ("worker-1.node.internal", "worker-1", "w1.node.internal", "w1")),
    ],
)
def test_a_hidden_node_claims_only_what_it_could_publish(
    hidden: dict[str, str | None], published: tuple[str, ...]
) -> None:
    """Hidden nodes go through the same name policy as selected ones."""
    publication = publish(node("worker-1", "w1"), hidden=hidden)
    assert names_of(publication, "worker-1") == published


def test_collisions_between_hidden_nodes_only_are_not_reported() -> None:
    """Two unselected Nodes sharing a Hostname is not nodehosts' business."""
    publication = publish(node("worker-1"), hidden={"worker-2": "x", "worker-3": "x"})
    assert publication.collisions == ()
    assert publication == publish(node("worker-1"), hidden={})


def test_a_static_host_beats_a_hidden_node_and_the_collision_says_so() -> None:
    lb = Host(("lb-0",), (ipaddress.ip_address("10.240.0.40"),), "static")
    publication = publish(node("worker-1"), hidden={"lb-0": None}, statics=(lb,))
    assert publication.records.by_name()["lb-0"].origin == "static"
    assert Collision("lb-0", "static:lb-0.node.internal", ("hidden:lb-0",)) in (
        publication.collisions
    )


def test_hidden_nodes_from_a_cluster_view() -> None:
    """What the caller passes: every Node of a view, by name, with its first Hostname."""
    cluster = [
        node("a", "x"),
        node("b"),
        NodeInfo("c", (("Hostname", "y"), ("Hostname", "z")), None, False),
    ]
    assert hidden_nodes(cluster) == {"a": "x", "b": None, "c": "y"}


# --- exhaustively, over small pools where every name collides with some other --------------

_NAMES = ["worker-0", "worker-1", "controller-0", "worker-0.node.internal", "db.node.internal"]
_ALIASES = [None, "worker-0", "worker-1", "controller-0", "db", "db.node.internal"]


def _forms(name: str | None) -> set[str]:
    return set(expand_name(name.lower(), DOMAIN)) if name else set()


@pytest.mark.parametrize(
    ("selected_name", "selected_alias"), list(itertools.product(_NAMES, _ALIASES))
)
def test_no_selected_nodes_alias_is_ever_a_hidden_nodes_name(
    selected_name: str, selected_alias: str | None
) -> None:
    """For every selected node and every hidden node from the pools: a name the selected node
    publishes only through its Hostname is never a form of the hidden node's name or Hostname,
    and every name it loses is in its decision's reason."""
    selected = node(selected_name, selected_alias)
    for hidden_name, hidden_alias in itertools.product(_NAMES, _ALIASES):
        if hidden_name == selected_name:
            continue  # one Node cannot be both
        publication = publish(selected, hidden={hidden_name: hidden_alias})
        published = set(names_of(publication, selected_name))
        held = _forms(hidden_name) | _forms(hidden_alias)
        through_alias = published - _forms(selected_name)
        assert not through_alias & held, (hidden_name, hidden_alias)
        reason = decision_of(publication, selected_name).reason or ""
        wanted = _forms(selected_name) | _forms(selected_alias)
        for lost in wanted - published:
            assert repr(lost) in reason


# --- as skipped nodes, exactly ----------------------------------------------------------

_pool = st.sampled_from([*_NAMES, "worker-2", "lb-0"])
_aliases = st.sampled_from([*_ALIASES, "lb-0", "localhost", "Bad_"])


@settings(max_examples=300, deadline=None)
@given(
    selected=st.dictionaries(_pool, _aliases, max_size=4),
    hidden=st.dictionaries(_pool, _aliases, max_size=4),
    statics=st.booleans(),
)
def test_hidden_nodes_rank_exactly_as_skipped_nodes(
    selected: dict[str, str | None], hidden: dict[str, str | None], statics: bool
) -> None:
    """The records published with `hidden` are those of the whole cluster where the hidden
    Nodes are skipped (NotReady under exclude_not_ready): the selector changes what is
    published from, never who owns a name."""
    hidden = {name: alias for name, alias in hidden.items() if name not in selected}
    lb = (Host(("lb-0",), (ipaddress.ip_address("10.240.0.40"),), "static"),) if statics else ()
    nodes = [
        node(name, alias, f"10.0.0.{i + 1}") for i, (name, alias) in enumerate(selected.items())
    ]
    with_hidden = build_publication(nodes, lb, RecordPolicy(exclude_not_ready=True), hidden)
    skipped = [
        NodeInfo(
            name,
            (("InternalIP", "10.1.0.1"),) + ((("Hostname", alias),) if alias else ()),
            False,
            False,
        )
        for name, alias in hidden.items()
    ]
    whole = build_publication(nodes + skipped, lb, RecordPolicy(exclude_not_ready=True))
    assert with_hidden.records == whole.records
    assert [(d.node, d.names, d.published, d.skip) for d in with_hidden.decisions] == [
        (d.node, d.names, d.published, d.skip) for d in whole.decisions if d.node in selected
    ]


def test_the_index_follows_a_node_leaving_and_joining_the_selection() -> None:
    """worker-9 has Hostname controller-0. controller-0 hidden: worker-9 loses the alias;
    controller-0 gone from the cluster: the alias is worker-9's; controller-0 selected: its
    own name wins. Each step equals a full build and reports only the hosts it changed."""
    index = RecordIndex(POLICY)
    nodes = {"worker-9": node("worker-9", "controller-0")}
    hidden: dict[str, str | None] = {"controller-0": None}
    first = index.update(nodes, [], POLICY, hidden=hidden)
    assert first == publish(*nodes.values(), hidden=hidden)
    assert "controller-0" not in first.records.by_name()
    index.changes()

    second = index.update(nodes, [], POLICY, hidden={})
    assert second.records.by_name()["controller-0"].node == "worker-9"
    changes = index.changes()
    assert changes is not None
    assert [h.names for h in changes.added] == [
        ("worker-9.node.internal", "worker-9", "controller-0.node.internal", "controller-0")
    ]

    nodes = {**nodes, "controller-0": node("controller-0", address="10.240.0.10")}
    third = index.update(nodes, [], POLICY, hidden={"controller-0": None})  # the whole cluster
    assert third == publish(*nodes.values(), hidden={})
    assert third.records.by_name()["controller-0"].node == "controller-0"

    del nodes["controller-0"]  # deselected: hidden again
    fourth = index.update(nodes, [], POLICY, hidden={"controller-0": None})
    assert fourth == first
