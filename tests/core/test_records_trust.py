"""The record policy distrusts what a kubelet says about its own Node (issue 12, item 1).

A Node's metadata.name and status.addresses are written by whoever registered it; with TLS
bootstrapping that is anyone holding the bootstrap token. So a dotted name is published only
under an allowed suffix, reserved names (the zone apex, its NS name, localhost, cluster.local)
are never a node's, and the admin's static hosts beat every node, names and addresses alike.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodehosts.core.model import Host, NodeInfo, Publication
from nodehosts.core.records import RecordPolicy, build_publication, expand_name, refusal

ip = ipaddress.ip_address
LB = "10.240.0.40"


def node(name: str, *addresses: tuple[str, str]) -> NodeInfo:
    return NodeInfo(name=name, addresses=addresses, ready=True, unschedulable=False)


def internal(address: str) -> tuple[str, str]:
    return ("InternalIP", address)


def external(address: str) -> tuple[str, str]:
    return ("ExternalIP", address)


def hostname(name: str) -> tuple[str, str]:
    return ("Hostname", name)


def static(names: tuple[str, ...], *addresses: str) -> Host:
    return Host(names=names, addresses=tuple(map(ip, addresses)), origin="static")


LB_0 = static(("lb-0",), LB)


def publish(
    *nodes: NodeInfo, statics: tuple[Host, ...] = (LB_0,), policy: RecordPolicy | None = None
) -> Publication:
    return build_publication(nodes, statics, policy or RecordPolicy())


def names_of_node(publication: Publication, name: str) -> tuple[str, ...]:
    hosts = [h for h in publication.records.hosts if h.node == name]
    return hosts[0].names if hosts else ()


def decision_of(publication: Publication, name: str):
    (decision,) = (d for d in publication.decisions if d.node == name)
    return decision


def node_addresses(publication: Publication) -> set[str]:
    return {str(a) for h in publication.records.hosts if h.origin == "node" for a in h.addresses}


# --- the attacks of issue 12 --------------------------------------------------------------


@pytest.mark.parametrize(
    "address_types", [("InternalIP", "ExternalIP"), ("ExternalIP", "InternalIP"), ("ExternalIP",)]
)
def test_a_node_claiming_the_kubernetes_service_name_and_the_lbs_address_gets_neither(
    address_types: tuple[str, ...],
) -> None:
    """Hostname kubernetes.default.svc.cluster.local and ExternalIP 10.240.0.40 (lb-0's):
    neither name nor address is published for the node, whatever the address preference."""
    evil = node(
        "worker-9",
        internal("10.240.0.109"),
        external(LB),
        hostname("kubernetes.default.svc.cluster.local"),
    )
    publication = publish(evil, policy=RecordPolicy(address_types=address_types))
    by_name = publication.records.by_name()
    assert "kubernetes.default.svc.cluster.local" not in by_name
    assert by_name["lb-0"].origin == "static"
    assert [h.origin for h in publication.records.hosts if ip(LB) in h.addresses] == ["static"]
    assert LB not in node_addresses(publication)
    reason = decision_of(publication, "worker-9").reason or ""
    assert "kubernetes.default.svc.cluster.local" in reason
    assert "reserved" in reason and "cluster.local" in reason
    if address_types[0] == "InternalIP":
        assert names_of_node(publication, "worker-9") == ("worker-9.node.internal", "worker-9")
    else:  # its preferred address is lb-0's: nothing of it is published
        assert names_of_node(publication, "worker-9") == ()
        assert f"{LB} is the address of static host 'lb-0.node.internal'" in reason


def test_a_node_named_outside_the_domain_is_not_published_and_the_reason_says_how_to_allow() -> (
    None
):
    """A Node named api.example.com gets no record; dump's reason names the setting and flag."""
    publication = publish(node("api.example.com", internal("10.240.0.150")))
    assert "api.example.com" not in publication.records.by_name()
    decision = decision_of(publication, "api.example.com")
    assert not decision.published
    assert decision.reason is not None
    assert "outside the allowed suffixes" in decision.reason
    assert "records.allowed_suffixes" in decision.reason
    assert "--allowed-suffix example.com" in decision.reason


def test_an_allowed_suffix_publishes_dotted_names_under_it() -> None:
    policy = RecordPolicy(allowed_suffixes=("example.com",))
    publication = publish(
        node("api.example.com", internal("10.240.0.150")),
        node("w.a.example.com", internal("10.240.0.151")),
        policy=policy,
    )
    assert names_of_node(publication, "api.example.com") == ("api.example.com",)
    assert names_of_node(publication, "w.a.example.com") == ("w.a.example.com",)


def test_a_dotted_hostname_outside_the_allowed_suffixes_is_dropped_with_a_note() -> None:
    """The node stays published under its own name; only the alias is refused."""
    publication = publish(node("worker-0", internal("10.240.0.101"), hostname("vm-17.dc.example")))
    assert names_of_node(publication, "worker-0") == ("worker-0.node.internal", "worker-0")
    decision = decision_of(publication, "worker-0")
    assert decision.published
    assert "ignored Hostname 'vm-17.dc.example'" in (decision.reason or "")
    assert "--allowed-suffix dc.example" in (decision.reason or "")


def test_the_domain_is_always_an_allowed_suffix() -> None:
    """A dotted name under the configured domain needs no setting, with or without others."""
    for policy in (RecordPolicy(), RecordPolicy(allowed_suffixes=("example.com",))):
        publication = publish(node("w0.node.internal", internal("10.0.0.1")), policy=policy)
        assert names_of_node(publication, "w0.node.internal") == ("w0.node.internal",)


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("x.evilnode.internal", "node.internal"),
        ("evilnode.internal", "node.internal"),
        ("node.internal.evil.example", "node.internal"),
        ("api.notexample.com", "example.com"),
        ("example.com", "example.com"),  # the suffix itself is a zone, not a host under it
        ("a.example.com.evil", "example.com"),
    ],
)
def test_suffix_matching_is_label_aligned(name: str, suffix: str) -> None:
    """evilnode.internal is not under node.internal; a suffix covers names strictly below it."""
    policy = RecordPolicy(domain="node.internal", allowed_suffixes=(suffix,))
    publication = publish(node(name, internal("10.0.0.1")), policy=policy)
    assert publication.records.hosts == (publication.records.by_name()["lb-0"],)
    assert "outside the allowed suffixes" in (decision_of(publication, name).reason or "")


def test_allowed_suffixes_are_normalised_and_validated() -> None:
    policy = RecordPolicy(allowed_suffixes=["Example.COM.", "lab.example"])  # type: ignore[arg-type]
    assert policy.allowed_suffixes == ("example.com", "lab.example")
    with pytest.raises(ValueError, match="allowed suffix"):
        RecordPolicy(allowed_suffixes=("bad_suffix",))
    with pytest.raises(ValueError, match="reserved suffix"):
        RecordPolicy(reserved_suffixes=("",))


# --- static hosts win ---------------------------------------------------------------------


def test_a_static_host_beats_a_node_of_the_same_name() -> None:
    """The admin's static lb-0 keeps its name; a Node registered as lb-0 gets nothing."""
    publication = publish(node("lb-0", internal("10.240.0.99")))
    assert publication.records.by_name()["lb-0"].origin == "static"
    assert publication.records.by_name()["lb-0.node.internal"].addresses == (ip(LB),)
    decision = decision_of(publication, "lb-0")
    assert not decision.published
    assert "lost name 'lb-0' to static host 'lb-0.node.internal'" in (decision.reason or "")


def test_a_node_never_publishes_a_static_hosts_address() -> None:
    """The LB's address stays the LB's: the node keeps only its other addresses."""
    publication = publish(node("worker-0", internal(LB), internal("10.240.0.101")))
    (host,) = (h for h in publication.records.hosts if h.node == "worker-0")
    assert host.addresses == (ip("10.240.0.101"),)
    assert [h.origin for h in publication.records.hosts if ip(LB) in h.addresses] == ["static"]
    assert f"{LB} is the address of static host" in (
        decision_of(publication, "worker-0").reason or ""
    )


def test_the_static_host_named_for_a_shared_address_does_not_depend_on_input_order() -> None:
    """Two static hosts with lb-0's address: the reason names the smaller one, always."""
    hosts = (static(("lb-1",), LB), static(("haproxy",), LB))
    worker = node("worker-0", internal(LB), internal("10.240.0.101"))
    reasons = {
        decision_of(publish(worker, statics=order), "worker-0").reason
        for order in (hosts, hosts[::-1])
    }
    assert reasons == {f"ignored {LB}: {LB} is the address of static host 'haproxy.node.internal'"}


def test_a_node_whose_only_address_is_a_static_hosts_is_skipped() -> None:
    publication = publish(node("worker-0", internal(LB)))
    decision = decision_of(publication, "worker-0")
    assert not decision.published
    assert "no usable address left" in (decision.reason or "")
    assert [h.origin for h in publication.records.hosts] == ["static"]


# --- reserved names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("localhost", "localhost"),
        ("LocalHost", "localhost"),
        ("a.localhost", "localhost"),
        ("node.internal", "zone apex"),
        ("ns", "NS name"),
        ("ns.node.internal", "NS name"),
        ("foo.cluster.local", "cluster.local"),
        ("cluster.local", "cluster.local"),
        ("kubernetes.default.svc.cluster.local", "cluster.local"),
    ],
)
def test_reserved_names_are_never_a_nodes(name: str, why: str) -> None:
    """Even when allowed by suffix, a reserved name is refused, as a node name or Hostname."""
    policy = RecordPolicy(allowed_suffixes=("cluster.local", "localhost"))
    as_name = publish(node(name, internal("10.0.0.1")), policy=policy)
    decision = decision_of(as_name, name)
    assert not decision.published
    assert why in (decision.reason or "")
    as_alias = publish(node("w", internal("10.0.0.1"), hostname(name)), policy=policy)
    assert names_of_node(as_alias, "w") == ("w.node.internal", "w")
    assert why in (decision_of(as_alias, "w").reason or "")


def test_the_configured_nameserver_and_reserved_suffixes_are_reserved() -> None:
    policy = RecordPolicy(
        nameserver="dns1.node.internal",
        reserved_suffixes=("corp.example",),
        allowed_suffixes=("corp.example",),
    )
    publication = publish(
        node("dns1", internal("10.0.0.1")),
        node("ns", internal("10.0.0.2")),  # ns.node.internal is not the NS name here
        node("a.corp.example", internal("10.0.0.3")),
        node("b.cluster.local", internal("10.0.0.4")),  # replaced default: still not allowed
        policy=policy,
    )
    assert not decision_of(publication, "dns1").published
    assert "NS name" in (decision_of(publication, "dns1").reason or "")
    assert names_of_node(publication, "ns") == ("ns.node.internal", "ns")
    assert "reserved suffix 'corp.example'" in (
        decision_of(publication, "a.corp.example").reason or ""
    )
    assert not decision_of(publication, "b.cluster.local").published


def test_a_static_host_may_hold_the_nameservers_name() -> None:
    """Reserved only against nodes: the admin may give ns.<domain> its glue address."""
    publication = publish(statics=(static(("ns", "lb-0"), LB),))
    assert publication.records.by_name()["ns.node.internal"].origin == "static"


def test_an_empty_domain_allows_no_dotted_node_name_by_default() -> None:
    policy = RecordPolicy(domain="")
    publication = publish(
        node("w0", internal("10.0.0.1")),
        node("w1.lab.example", internal("10.0.0.2")),
        policy=policy,
    )
    assert names_of_node(publication, "w0") == ("w0",)
    assert not decision_of(publication, "w1.lab.example").published


# --- names a node cannot take from another (review of issue 12) -------------------------


def _collision(publication: Publication, name: str):
    (collision,) = (c for c in publication.collisions if c.name == name)
    return collision


@pytest.mark.parametrize("attacker", ["aaa", "zzz"])
def test_a_hostname_claimed_by_two_nodes_is_published_for_neither(attacker: str) -> None:
    """A node registered with the Hostname of another node's alias cannot take it, whatever
    its name sorts as: the contested name goes to nobody, both keep their own names, and each
    node's decision (and the collision) says why."""
    victim = node("ip-10-240-0-101", internal("10.240.0.101"), hostname("worker-1"))
    evil = node(attacker, internal("10.240.0.109"), hostname("worker-1"))
    publication = publish(victim, evil)
    by_name = publication.records.by_name()
    assert "worker-1" not in by_name and "worker-1.node.internal" not in by_name
    assert names_of_node(publication, "ip-10-240-0-101") == (
        "ip-10-240-0-101.node.internal",
        "ip-10-240-0-101",
    )
    assert names_of_node(publication, attacker) == (f"{attacker}.node.internal", attacker)
    for name in ("ip-10-240-0-101", attacker):
        reason = decision_of(publication, name).reason or ""
        assert "'worker-1'" in reason and "Hostname of more than one node" in reason
    collision = _collision(publication, "worker-1")
    assert collision.winner is None
    assert sorted(collision.losers) == sorted(["ip-10-240-0-101", attacker])


def test_a_nodes_own_name_still_beats_every_other_nodes_hostname() -> None:
    """The lab's kubelets report Hostname == name: worker-1 keeps worker-1 against two nodes
    claiming it as their Hostname."""
    publication = publish(
        node("worker-1", internal("10.240.0.101"), hostname("worker-1")),
        node("aaa", internal("10.240.0.108"), hostname("worker-1")),
        node("zzz", internal("10.240.0.109"), hostname("worker-1")),
    )
    assert publication.records.by_name()["worker-1"].node == "worker-1"
    assert publication.records.by_name()["worker-1.node.internal"].node == "worker-1"
    assert "lost name 'worker-1' to node 'worker-1'" in (
        decision_of(publication, "aaa").reason or ""
    )


WORKER_2 = (internal("10.240.0.102"),)


@pytest.mark.parametrize(
    ("skipped", "policy"),
    [
        (NodeInfo("worker-2", WORKER_2, False, False), RecordPolicy(exclude_not_ready=True)),
        (NodeInfo("worker-2", WORKER_2, True, True), RecordPolicy(exclude_unschedulable=True)),
        (node("worker-2", internal("127.0.0.1")), RecordPolicy()),
        (node("worker-2", internal(LB)), RecordPolicy()),
    ],
    ids=["not-ready", "unschedulable", "no-usable-address", "static-address"],
)
@pytest.mark.parametrize(
    "evil",
    [
        node("worker-9", internal("10.240.0.109"), hostname("worker-2")),
        node("aaa", internal("10.240.0.109"), hostname("worker-2.node.internal")),
        node("worker-2.node.internal", internal("10.240.0.109")),
    ],
    ids=["hostname", "dotted-hostname", "dotted-name"],
)
def test_a_skipped_node_keeps_its_names_from_every_other_node(
    skipped: NodeInfo, policy: RecordPolicy, evil: NodeInfo
) -> None:
    """worker-2 rebooting (NotReady), cordoned, or without a usable address publishes nothing,
    but its names stay its own: no other node's Hostname or dotted name takes them."""
    publication = publish(skipped, evil, policy=policy)
    by_name = publication.records.by_name()
    assert "worker-2" not in by_name and "worker-2.node.internal" not in by_name
    assert not decision_of(publication, "worker-2").published
    assert "to node 'worker-2'" in (decision_of(publication, evil.name).reason or "")


def test_a_static_host_written_as_a_fqdn_also_holds_its_bare_name() -> None:
    """`10.240.0.40 lb-0.node.internal` is lb-0 as much as `10.240.0.40 lb-0`: a Node named
    lb-0 gets neither form, and the static host is published under both."""
    for statics in ((static(("lb-0.node.internal",), LB),), (static(("lb-0",), LB),)):
        publication = publish(node("lb-0", internal("10.240.0.109")), statics=statics)
        by_name = publication.records.by_name()
        assert by_name["lb-0"].origin == "static" and by_name["lb-0"].addresses == (ip(LB),)
        assert by_name["lb-0.node.internal"] is by_name["lb-0"]
        assert by_name["lb-0"].names == ("lb-0.node.internal", "lb-0")
        assert not decision_of(publication, "lb-0").published
    # Only a single label under the domain has a bare form; other FQDNs stay as written.
    publication = publish(statics=(static(("a.b.node.internal", "lb.example.com"), LB),))
    assert publication.records.hosts[0].names == ("a.b.node.internal", "lb.example.com")


# --- properties ---------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        [
            "w-1",
            "w-10",
            "lb-0",
            "ns",
            "localhost",
            "node.internal",
            "ns.node.internal",
            "a.node.internal",
            "evilnode.internal",
            "api.example.com",
            "example.com",
            "kubernetes.default.svc.cluster.local",
            "x.lab.example",
        ]
    ),
    st.from_regex(r"[a-z][a-z0-9]{0,3}(\.[a-z][a-z0-9]{0,3}){0,3}", fullmatch=True),
)
ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.2", LB, "10.0.0.9", "2001:db8::9"])
NODES = st.builds(
    lambda name, ready, *addresses: NodeInfo(name, addresses, ready, False),
    NAMES,
    st.booleans(),
    st.tuples(st.sampled_from(["InternalIP", "ExternalIP"]), ADDRESSES),
    st.one_of(st.tuples(st.just("Hostname"), NAMES), st.tuples(st.just("InternalIP"), ADDRESSES)),
)
STATICS = st.builds(
    lambda names, addresses: static(tuple(names), *addresses),
    st.lists(st.sampled_from(["lb-0", "api", "w-1", "a.node.internal", "ns"]), min_size=1,
             max_size=2, unique=True),
    st.lists(ADDRESSES, min_size=1, max_size=2, unique=True),
)  # fmt: skip
POLICIES = st.builds(
    RecordPolicy,
    domain=st.sampled_from(["node.internal", ""]),
    address_types=st.sampled_from([("InternalIP", "ExternalIP"), ("ExternalIP",)]),
    allowed_suffixes=st.sampled_from([(), ("example.com",), ("lab.example", "cluster.local")]),
    reserved_suffixes=st.sampled_from([("cluster.local",), ("cluster.local", "lab.example")]),
    exclude_not_ready=st.booleans(),
)


def _under(name: str, suffix: str) -> bool:
    return name.endswith("." + suffix)


@settings(deadline=None, max_examples=300)
@given(
    nodes=st.lists(NODES, max_size=6, unique_by=lambda n: n.name),
    statics=st.lists(STATICS, max_size=2),
    policy=POLICIES,
)
def test_no_node_ever_publishes_a_reserved_foreign_or_static_name_or_address(
    nodes: list[NodeInfo], statics: list[Host], policy: RecordPolicy
) -> None:
    """Whatever Nodes report: every node record is under an allowed suffix (or bare/under the
    domain), never reserved, never a static host's name (in either form) or address, never
    another node's own name (skipped or not), and never a Hostname another node reports too."""
    publication = build_publication(nodes, statics, policy)
    domain = policy.domain
    static_claims = {
        expanded
        for host in statics
        for raw in host.names
        for expanded in ((raw, f"{raw}.{domain}") if domain else (raw,))
    }
    static_claims |= {
        name.removesuffix(f".{domain}") for name in static_claims if domain and _under(name, domain)
    }
    own: dict[str, set[str]] = {}  # a form of a node's metadata.name -> those nodes
    aliases: dict[str, set[str]] = {}  # a form of a node's Hostname -> the nodes reporting it
    for n in nodes:
        for form in expand_name(n.name, domain):
            own.setdefault(form, set()).add(n.name)
        if n.hostname is not None and n.hostname != n.name and refusal(n.name, policy) is None:
            for form in expand_name(n.hostname, domain):
                aliases.setdefault(form, set()).add(n.name)
    static_addresses = {a for host in statics for a in host.addresses}
    nameserver = f"ns.{policy.domain}" if policy.domain else None
    allowed = [s for s in (policy.domain, *policy.allowed_suffixes) if s]
    for host in publication.records.hosts:
        if host.origin != "node":
            continue
        assert not static_addresses.intersection(host.addresses)
        for name in host.names:
            assert name not in static_claims
            assert host.node in own.get(name, aliases.get(name))
            if name not in own:
                assert aliases[name] == {host.node}
            assert name not in ("localhost", policy.domain, nameserver)
            assert not name.endswith(".localhost")
            for reserved in policy.reserved_suffixes:
                assert name != reserved and not _under(name, reserved)
            if "." in name:
                assert any(_under(name, suffix) for suffix in allowed), name
