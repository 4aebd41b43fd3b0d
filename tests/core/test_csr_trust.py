"""The serving-CSR rules against a kubelet that lies about its Node (issue 12, items 1 and 2).

The records here come from the real record policy (`build_publication`), as in the daemon, so
"a name the record policy publishes for the node" means exactly what DNS answers.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodehosts.core.csr import CsrPolicy, NodeIndex, Reason, Verdict
from nodehosts.core.model import Host, NodeInfo, RecordSet
from nodehosts.core.records import RecordPolicy, build_publication
from tests.helpers.csrs import make_csr

LB = "10.240.0.40"
LB_0 = Host(("lb-0",), (ipaddress.ip_address(LB),), "static")


def node(name: str, *addresses: tuple[str, str]) -> NodeInfo:
    return NodeInfo(name=name, addresses=addresses, ready=True, unschedulable=False)


WORKER_1 = node("worker-1", ("InternalIP", "10.240.0.101"), ("Hostname", "worker-1"))
CONTROLLER_0 = node("controller-0", ("InternalIP", "10.240.0.10"))
# The attacker of issue 12: registered with the bootstrap token, its kubelet reports the
# kubernetes Service's name as its Hostname and the LB's address as its ExternalIP.
EVIL = node(
    "worker-9",
    ("InternalIP", "10.240.0.109"),
    ("ExternalIP", LB),
    ("Hostname", "kubernetes.default.svc.cluster.local"),
)


def judge(
    csr: dict[str, Any],
    *nodes: NodeInfo,
    cluster: tuple[NodeInfo, ...] | None = None,
    statics: tuple[Host, ...] = (LB_0,),
    records_policy: RecordPolicy | None = None,
    policy: CsrPolicy | None = None,
) -> Verdict:
    """As the daemon does: publish `nodes` with the record policy, then judge the CSR."""
    records_policy = records_policy or RecordPolicy()
    records = build_publication(nodes, statics, records_policy).records
    index = NodeIndex.build(
        nodes, records, cluster, domain=records_policy.domain, static_hosts=statics
    )
    return index.evaluate(csr, policy or CsrPolicy())


def judge_against(csr: dict[str, Any], records: RecordSet, *nodes: NodeInfo) -> Verdict:
    """The approver alone, against a record set that gave away what the record policy now keeps
    (its own rules must still refuse it: defence in depth)."""
    index = NodeIndex.build(nodes, records, None, static_hosts=(LB_0,))
    return index.evaluate(csr, CsrPolicy())


def gave(node: str, address: str, *names: str) -> RecordSet:
    return RecordSet((Host(names, (ipaddress.ip_address(address),), "node", node),))


def assert_pending(verdict: Verdict, reason: Reason) -> None:
    assert (verdict.action, verdict.reason) == ("pending", reason), verdict.message


# --- issue 12, item 1 ---------------------------------------------------------------------


def test_the_kubernetes_service_name_is_never_approved_for_a_node() -> None:
    csr = make_csr("worker-9", dns=["worker-9", "kubernetes.default.svc.cluster.local"], ips=[])
    assert_pending(judge(csr, EVIL, WORKER_1), Reason.DNS_SAN_NOT_PUBLISHED)


@pytest.mark.parametrize("types", [("InternalIP",), ("InternalIP", "ExternalIP")])
def test_the_lbs_address_is_never_approved_for_a_node_whatever_the_address_types(
    types: tuple[str, ...],
) -> None:
    """10.240.0.40 is static host lb-0's, even when the node reports it and ExternalIP counts."""
    csr = make_csr("worker-9", dns=["worker-9"], ips=[LB])
    verdict = judge(csr, EVIL, WORKER_1, policy=CsrPolicy(address_types=types))
    assert_pending(verdict, Reason.IP_SAN_STATIC_HOST)
    assert "lb-0" in verdict.message


def test_the_attackers_own_name_and_internal_ip_are_still_its_own() -> None:
    """The rules refuse what is not the node's, not the node: its honest CSR passes."""
    csr = make_csr("worker-9", dns=["worker-9", "worker-9.node.internal"], ips=["10.240.0.109"])
    assert judge(csr, EVIL, WORKER_1).approved


def test_a_node_named_outside_the_allowed_suffixes_gets_no_dns_san() -> None:
    api = node("api.example.com", ("InternalIP", "10.240.0.150"))
    csr = make_csr("api.example.com", dns=["api.example.com"], ips=[])
    assert_pending(judge(csr, api), Reason.DNS_SAN_NOT_PUBLISHED)
    allowed = RecordPolicy(allowed_suffixes=("example.com",))
    assert judge(csr, api, records_policy=allowed).approved


def test_an_external_ip_is_not_approved_unless_its_type_is_allowed() -> None:
    worker = node("worker-2", ("InternalIP", "10.240.0.102"), ("ExternalIP", "203.0.113.2"))
    csr = make_csr("worker-2", dns=[], ips=["203.0.113.2"])
    verdict = judge(csr, worker)
    assert_pending(verdict, Reason.IP_SAN_TYPE_NOT_ALLOWED)
    assert "csr.address_types" in verdict.message
    both = CsrPolicy(address_types=("InternalIP", "ExternalIP"))
    assert judge(csr, worker, policy=both).approved


def test_a_name_lost_to_a_static_host_is_not_the_nodes() -> None:
    """A Node registered as lb-0 publishes nothing under lb-0, so it gets no lb-0 SAN."""
    impostor = node("lb-0", ("InternalIP", "10.240.0.99"))
    for dns in (["lb-0"], ["lb-0.node.internal"]):
        csr = make_csr("lb-0", dns=dns, ips=[])
        assert_pending(judge(csr, impostor), Reason.DNS_SAN_NOT_PUBLISHED)


def test_a_hostname_lost_to_another_node_is_not_the_nodes() -> None:
    """worker-0 says its Hostname is worker-1: the name stays worker-1's, so does the SAN."""
    liar = node("worker-0", ("InternalIP", "10.240.0.100"), ("Hostname", "worker-1"))
    csr = make_csr("worker-0", dns=["worker-1"], ips=[])
    assert_pending(judge(csr, liar, WORKER_1), Reason.DNS_SAN_NOT_PUBLISHED)
    assert judge(make_csr("worker-1", dns=["worker-1"], ips=[]), liar, WORKER_1).approved


@pytest.mark.parametrize(
    "name", ["localhost", "ns", "ns.node.internal", "node.internal", "x.cluster.local"]
)
def test_reserved_names_are_never_a_san(name: str) -> None:
    worker = node("worker-3", ("InternalIP", "10.240.0.103"), ("Hostname", name))
    allowed = RecordPolicy(allowed_suffixes=("cluster.local",))
    csr = make_csr("worker-3", dns=[name], ips=[])
    assert_pending(judge(csr, worker, records_policy=allowed), Reason.DNS_SAN_NOT_PUBLISHED)


# --- issue 12, item 2: label selectors do not blind the approver ---------------------------


def test_a_selected_worker_claiming_an_unselected_controllers_ip_is_refused() -> None:
    """Publishing only workers, the approver still sees controller-0 report 10.240.0.10."""
    liar = node("worker-1", ("InternalIP", "10.240.0.101"), ("InternalIP", "10.240.0.10"))
    csr = make_csr("worker-1", dns=["worker-1"], ips=["10.240.0.10"])
    verdict = judge(csr, liar, cluster=(liar, CONTROLLER_0))
    assert_pending(verdict, Reason.IP_SAN_SHARED)
    assert "controller-0" in verdict.message
    own = make_csr("worker-1", dns=["worker-1"], ips=["10.240.0.101"])
    assert judge(own, liar, cluster=(liar, CONTROLLER_0)).approved


def test_a_node_outside_the_selector_is_not_approved() -> None:
    csr = make_csr("controller-0", dns=[], ips=["10.240.0.10"])
    verdict = judge(csr, WORKER_1, cluster=(WORKER_1, CONTROLLER_0))
    assert_pending(verdict, Reason.NODE_NOT_SELECTED)
    assert_pending(judge(csr, WORKER_1), Reason.NODE_NOT_FOUND)


# --- review of issue 12: a name is the requester's alone, in the whole cluster ---------------


def test_an_alias_naming_an_unselected_node_is_refused() -> None:
    """worker-9 says its Hostname is controller-0; publishing only workers, the record policy
    gives it the name, but controller-0 is a Node of the cluster: never worker-9's SAN."""
    evil = node("worker-9", ("InternalIP", "10.240.0.109"), ("Hostname", "controller-0"))
    cluster = (evil, WORKER_1, CONTROLLER_0)
    for dns in (["controller-0"], ["worker-9", "controller-0.node.internal"]):
        csr = make_csr("worker-9", dns=dns, ips=["10.240.0.109"])
        verdict = judge(csr, evil, WORKER_1, cluster=cluster)
        assert_pending(verdict, Reason.DNS_SAN_OTHER_NODE)
        assert "controller-0" in verdict.message
    own = make_csr("worker-9", dns=["worker-9"], ips=["10.240.0.109"])
    assert judge(own, evil, WORKER_1, cluster=cluster).approved


@pytest.mark.parametrize(
    ("victim", "records_policy"),
    [
        (NodeInfo("worker-2", (("InternalIP", "10.240.0.102"),), False, False),
         RecordPolicy(exclude_not_ready=True)),
        (NodeInfo("worker-2", (("InternalIP", "10.240.0.102"),), True, True),
         RecordPolicy(exclude_unschedulable=True)),
        (NodeInfo("worker-2", (("Hostname", "worker-2"),), True, False), RecordPolicy()),
    ],
    ids=["not-ready", "cordoned", "no-address"],
)  # fmt: skip
def test_the_name_of_a_node_left_unpublished_is_still_not_anyone_elses(
    victim: NodeInfo, records_policy: RecordPolicy
) -> None:
    """worker-2 rebooting (or cordoned, or between addresses) publishes nothing but keeps its
    names in the records, so worker-9's Hostname does not get them; and were they published for
    worker-9, worker-2 is still a Node: refused either way."""
    evil = node("worker-9", ("InternalIP", "10.240.0.109"), ("Hostname", "worker-2"))
    csr = make_csr("worker-9", dns=["worker-2", "worker-2.node.internal"], ips=["10.240.0.109"])
    verdict = judge(csr, victim, evil, records_policy=records_policy)
    assert_pending(verdict, Reason.DNS_SAN_NOT_PUBLISHED)
    names = ("worker-9.node.internal", "worker-9", "worker-2.node.internal", "worker-2")
    verdict = judge_against(csr, gave("worker-9", "10.240.0.109", *names), victim, evil)
    assert_pending(verdict, Reason.DNS_SAN_OTHER_NODE)
    assert "worker-2" in verdict.message


def test_a_dotted_node_name_is_not_the_fqdn_of_another_node() -> None:
    """Registered as controller-0.node.internal, a Node would get the FQDN of controller-0."""
    evil = node("controller-0.node.internal", ("InternalIP", "10.240.0.109"))
    csr = make_csr("controller-0.node.internal", dns=["controller-0.node.internal"], ips=[])
    verdict = judge(csr, evil, cluster=(evil, CONTROLLER_0))
    assert_pending(verdict, Reason.DNS_SAN_OTHER_NODE)
    # Either Node could mean that name, so neither gets it; controller-0 keeps its bare name.
    honest = make_csr("controller-0", dns=["controller-0.node.internal"], ips=[])
    assert_pending(judge(honest, evil, CONTROLLER_0), Reason.DNS_SAN_OTHER_NODE)
    assert judge(
        make_csr("controller-0", dns=["controller-0"], ips=[]), evil, CONTROLLER_0
    ).approved


@pytest.mark.parametrize("evil_name", ["aaa", "zzz"])
def test_a_hostname_two_nodes_claim_is_refused_to_both(evil_name: str) -> None:
    """Two Nodes report Hostname worker-1 (none is named so): the records publish it for
    neither, and were it published for one, it belongs to neither alone: a SAN of neither."""
    victim = node("ip-10-240-0-101", ("InternalIP", "10.240.0.101"), ("Hostname", "worker-1"))
    evil = node(evil_name, ("InternalIP", "10.240.0.109"), ("Hostname", "worker-1"))
    for requester, ip in ((evil_name, "10.240.0.109"), ("ip-10-240-0-101", "10.240.0.101")):
        for dns in (["worker-1"], ["worker-1.node.internal"]):
            csr = make_csr(requester, dns=dns, ips=[ip])
            assert_pending(judge(csr, victim, evil), Reason.DNS_SAN_NOT_PUBLISHED)
            records = gave(requester, ip, "worker-1.node.internal", "worker-1")
            assert_pending(judge_against(csr, records, victim, evil), Reason.DNS_SAN_SHARED)
    own = make_csr(evil_name, dns=[evil_name], ips=["10.240.0.109"])
    assert judge(own, victim, evil).approved


def test_a_static_hosts_address_counts_even_when_it_lost_all_its_names() -> None:
    """`10.240.0.41 lb` loses lb to `10.240.0.40 lb-0 lb` and publishes nothing; 10.240.0.41
    is still the admin's, so a node that reports it gets no IP SAN for it."""
    statics = (
        Host(("lb-0", "lb"), (ipaddress.ip_address(LB),), "static"),
        Host(("lb",), (ipaddress.ip_address("10.240.0.41"),), "static"),
    )
    evil = node("worker-9", ("InternalIP", "10.240.0.109"), ("InternalIP", "10.240.0.41"))
    csr = make_csr("worker-9", dns=["worker-9"], ips=["10.240.0.41"])
    verdict = judge(csr, evil, statics=statics)
    assert_pending(verdict, Reason.IP_SAN_STATIC_HOST)
    assert "lb" in verdict.message


@pytest.mark.parametrize("domain", ["node.internal", "k8s.lab"])
@pytest.mark.parametrize("claim", ["name", "hostname"])
def test_kubernetes_is_reserved(domain: str, claim: str) -> None:
    """`kubernetes` is on the API server's certificate: never a node's SAN, bare or FQDN."""
    if claim == "name":
        requester = node("kubernetes", ("InternalIP", "10.240.0.109"))
    else:
        requester = node("worker-9", ("InternalIP", "10.240.0.109"), ("Hostname", "kubernetes"))
    records_policy = RecordPolicy(domain=domain)
    for dns in ("kubernetes", f"kubernetes.{domain}", "KUBERNETES"):
        csr = make_csr(requester.name, dns=[dns], ips=[])
        verdict = judge(csr, requester, records_policy=records_policy)
        assert_pending(verdict, Reason.DNS_SAN_RESERVED)
        assert "kubernetes" in verdict.message


# --- property: nothing that is not the node's own passes ------------------------------------

NAMES = ["worker-1", "worker-10", "lb-0", "ns", "localhost", "api.example.com",
         "x.cluster.local", "a.node.internal", "evilnode.internal", "kubernetes",
         "worker-1.node.internal"]  # fmt: skip
ADDRESSES = ["10.240.0.101", "10.240.0.110", LB, "10.240.0.10", "203.0.113.7"]
NODE = st.builds(
    lambda name, hostname, addresses: node(name, ("Hostname", hostname), *addresses),
    st.sampled_from(NAMES),
    st.sampled_from(NAMES),
    st.lists(
        st.tuples(st.sampled_from(["InternalIP", "ExternalIP"]), st.sampled_from(ADDRESSES)),
        min_size=1,
        max_size=3,
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    selected=st.lists(NODE, min_size=1, max_size=4, unique_by=lambda n: n.name),
    unselected=st.lists(NODE, max_size=2, unique_by=lambda n: n.name),
    dns=st.lists(
        st.sampled_from(NAMES + [f"{n}.node.internal" for n in NAMES[:4]]), max_size=3, unique=True
    ),
    ips=st.lists(st.sampled_from(ADDRESSES), max_size=2, unique=True),
    types=st.sampled_from([("InternalIP",), ("InternalIP", "ExternalIP")]),
)
def test_an_approved_csr_holds_only_what_is_the_nodes_alone(
    selected: list[NodeInfo],
    unselected: list[NodeInfo],
    dns: list[str],
    ips: list[str],
    types: tuple[str, ...],
) -> None:
    """Any Nodes, any SANs: approved only when every DNS SAN is published for the requester
    and no one else, and every IP SAN is its own address of an allowed type that no static
    host and no other Node of the whole cluster reports."""
    names = {n.name for n in selected}
    cluster = [*selected, *(n for n in unselected if n.name not in names)]
    requester = selected[0]
    csr = make_csr(requester.name, dns=dns, ips=ips)
    publication = build_publication(selected, (LB_0,), RecordPolicy())
    verdict = judge(csr, *selected, cluster=tuple(cluster), policy=CsrPolicy(address_types=types))
    if not verdict.approved:
        return
    own_names = {n for h in publication.records.hosts if h.node == requester.name for n in h.names}
    assert {d.lower() for d in dns} <= own_names
    for name in dns:
        assert name != "localhost" and not name.endswith("cluster.local")
        assert "." not in name or name.endswith(".node.internal")
        assert name not in ("kubernetes", "kubernetes.node.internal")

    # No DNS SAN is a form of another Node's name, published or not, nor (unless it is a form of
    # the requester's own name) of another Node's Hostname.
    def forms(names: set[str]) -> set[str]:
        return {f for c in names for f in ((c,) if "." in c else (c, f"{c}.node.internal"))}

    requested = {d.lower() for d in dns}
    for other in cluster:
        if other is requester:
            continue
        assert not forms({other.name}) & requested, (other, dns)
        hostnames = forms({v for k, v in other.addresses if k == "Hostname"})
        assert not hostnames & (requested - forms({requester.name})), (other, dns)
    for text in ips:
        assert text != LB
        assert any((t, text) in requester.addresses for t in types)
        others = [n for n in cluster if n is not requester]
        assert not any(text in (a for _, a in other.addresses) for other in others)
