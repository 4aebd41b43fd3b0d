"""The record policy: names, addresses, filters, static hosts, collisions, ordering."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodehosts.core.model import Collision, Host, NodeInfo, Publication, SkipReason
from nodehosts.core.names import name_problem
from nodehosts.core.records import RecordPolicy, address_problem, build_publication, parse_address

ip = ipaddress.ip_address


def node(
    name: str,
    *addresses: tuple[str, str],
    ready: bool | None = True,
    unschedulable: bool = False,
) -> NodeInfo:
    return NodeInfo(name=name, addresses=addresses, ready=ready, unschedulable=unschedulable)


def internal(address: str) -> tuple[str, str]:
    return ("InternalIP", address)


def external(address: str) -> tuple[str, str]:
    return ("ExternalIP", address)


def hostname(name: str) -> tuple[str, str]:
    return ("Hostname", name)


def static(names: tuple[str, ...], *addresses: str) -> Host:
    return Host(names=names, addresses=tuple(map(ip, addresses)), origin="static")


def publish(
    *nodes: NodeInfo, statics: tuple[Host, ...] = (), policy: RecordPolicy | None = None
) -> Publication:
    return build_publication(nodes, statics, policy or RecordPolicy())


def names_of(publication: Publication) -> dict[str, tuple[str, ...]]:
    """Owner (node name, or the first name of a static host) -> published names."""
    return {(host.node or host.names[0]): host.names for host in publication.records.hosts}


def addresses_of(publication: Publication, node_name: str) -> list[str]:
    (host,) = (h for h in publication.records.hosts if h.node == node_name)
    return [str(address) for address in host.addresses]


def decision_of(publication: Publication, node_name: str):
    (decision,) = (d for d in publication.decisions if d.node == node_name)
    return decision


# --- policy -------------------------------------------------------------------------------


def test_the_default_policy_matches_the_documented_defaults() -> None:
    """Defaults: node.internal, InternalIP then ExternalIP, nothing excluded."""
    policy = RecordPolicy()
    assert policy.domain == "node.internal"
    assert policy.address_types == ("InternalIP", "ExternalIP")
    assert not policy.exclude_not_ready
    assert not policy.exclude_unschedulable


@pytest.mark.parametrize(
    ("given_domain", "normalised"),
    [("Node.Internal", "node.internal"), ("lab.example.", "lab.example"), ("", ""), (".", "")],
)
def test_the_domain_is_lower_cased_and_loses_a_trailing_dot(
    given_domain: str, normalised: str
) -> None:
    """A domain written as an FQDN or in capitals means the same domain."""
    assert RecordPolicy(domain=given_domain).domain == normalised


@pytest.mark.parametrize(
    "bad_domain",
    ["under_score", "-lead.example", "a..b", "..", "x" * 64, "a." * 95 + "b", "dömain"],
)
def test_an_invalid_domain_is_refused_when_the_policy_is_made(bad_domain: str) -> None:
    """A bad --domain fails at configuration time, naming the domain."""
    with pytest.raises(ValueError, match="invalid domain"):
        RecordPolicy(domain=bad_domain)


def test_a_policy_without_address_types_is_refused() -> None:
    """No address types would publish nothing at all: a configuration error."""
    with pytest.raises(ValueError, match="address_types"):
        RecordPolicy(address_types=())


def test_address_types_given_as_a_list_become_a_tuple() -> None:
    """Config code may pass a list; the policy stays hashable and comparable."""
    policy = RecordPolicy(address_types=["ExternalIP"])  # type: ignore[arg-type]
    assert policy.address_types == ("ExternalIP",)
    assert hash(policy) == hash(RecordPolicy(address_types=("ExternalIP",)))


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "valid",
    [
        "a",
        "worker-0",
        "0worker",
        "123",
        "a-b-c.example.com",
        "x" * 63,
        ".".join(["x" * 63] * 3) + "." + "y" * 61,  # exactly 253
    ],
)
def test_rfc_1123_host_names_are_valid(valid: str) -> None:
    """Labels of a-z, 0-9 and inner '-' up to 63 characters, 253 in all."""
    assert name_problem(valid) is None


@pytest.mark.parametrize(
    ("invalid", "problem"),
    [
        ("", "empty name"),
        ("-a", "starts or ends with '-'"),
        ("a-", "starts or ends with '-'"),
        ("a_b", "characters other than"),
        ("a b", "characters other than"),
        ("a..b", "empty label"),
        (".a", "empty label"),
        ("a.", "empty label"),
        ("x" * 64, "longer than 63"),
        (".".join(["x" * 63] * 3) + "." + "y" * 62, "longer than 253"),
        ("wörker", "not ASCII"),
        ("Worker", "characters other than"),  # callers lower-case first
    ],
)
def test_names_that_break_rfc_1123_say_what_is_wrong(invalid: str, problem: str) -> None:
    """The reason names the broken rule, so an operator can fix the name."""
    reason = name_problem(invalid)
    assert reason is not None
    assert problem in reason


def test_a_node_is_published_under_its_fqdn_first_and_its_bare_name() -> None:
    """worker-0 -> worker-0.node.internal (canonical) and worker-0."""
    publication = publish(node("worker-0", internal("10.240.0.101")))
    assert names_of(publication) == {"worker-0": ("worker-0.node.internal", "worker-0")}


def test_an_empty_domain_publishes_bare_names_only() -> None:
    """With domain "" the bare name is the canonical name."""
    publication = publish(
        node("worker-0", internal("10.240.0.101")), policy=RecordPolicy(domain="")
    )
    assert names_of(publication) == {"worker-0": ("worker-0",)}


def test_a_name_with_a_dot_is_published_as_given() -> None:
    """A dotted node name under an allowed suffix is already qualified: no domain is appended."""
    publication = publish(
        node("w0.lab.example", internal("10.240.0.101")),
        policy=RecordPolicy(allowed_suffixes=("lab.example",)),
    )
    assert names_of(publication) == {"w0.lab.example": ("w0.lab.example",)}


def test_names_are_lower_cased() -> None:
    """Upper-case letters in the node name and the domain are published lower-case."""
    publication = publish(
        node("Worker-0", internal("10.240.0.101")), policy=RecordPolicy(domain="Lab.Example")
    )
    assert names_of(publication) == {"Worker-0": ("worker-0.lab.example", "worker-0")}


def test_a_differing_hostname_address_adds_its_names_after_the_node_names() -> None:
    """The kubelet's Hostname is how the apiserver reaches it: it must resolve too."""
    publication = publish(node("worker-0", internal("10.240.0.101"), hostname("vm-17")))
    assert names_of(publication) == {
        "worker-0": ("worker-0.node.internal", "worker-0", "vm-17.node.internal", "vm-17")
    }


@pytest.mark.parametrize("same", ["worker-0", "WORKER-0", "worker-0.node.internal"])
def test_a_hostname_equal_to_a_node_name_adds_nothing(same: str) -> None:
    """Equal names (case-insensitively, or the FQDN) are not repeated on the line."""
    publication = publish(node("worker-0", internal("10.240.0.101"), hostname(same)))
    assert names_of(publication) == {"worker-0": ("worker-0.node.internal", "worker-0")}
    assert publication.collisions == ()


def test_a_dotted_hostname_is_added_as_given() -> None:
    """A qualified Hostname gets no domain (when its suffix is allowed)."""
    publication = publish(
        node("worker-0", internal("10.240.0.101"), hostname("vm-17.dc.example")),
        policy=RecordPolicy(allowed_suffixes=("dc.example",)),
    )
    assert names_of(publication)["worker-0"][-1] == "vm-17.dc.example"


def test_only_the_first_hostname_address_is_an_alias() -> None:
    """NodeInfo.hostname is the first Hostname address; later ones are not published."""
    publication = publish(node("w", internal("10.0.0.1"), hostname("first"), hostname("second")))
    assert "second" not in names_of(publication)["w"]
    assert "first" in names_of(publication)["w"]


def test_an_invalid_hostname_drops_only_the_alias_and_says_so() -> None:
    """The node is still published under its own names; the decision notes the alias."""
    publication = publish(node("worker-0", internal("10.240.0.101"), hostname("vm_17")))
    assert names_of(publication) == {"worker-0": ("worker-0.node.internal", "worker-0")}
    decision = decision_of(publication, "worker-0")
    assert decision.published
    assert decision.reason is not None
    assert "Hostname 'vm_17'" in decision.reason


@pytest.mark.parametrize(
    "bad_name", ["under_score", "-lead", "x" * 64, "dots..inside", "\u212aelvin", "trailing."]
)
def test_a_node_with_an_invalid_name_is_skipped_with_the_reason(bad_name: str) -> None:
    """Never publish what a resolver cannot look up; say why in the decision."""
    publication = publish(node(bad_name, internal("10.240.0.101")))
    assert len(publication.records) == 0
    decision = decision_of(publication, bad_name)
    assert not decision.published
    assert decision.reason is not None
    assert f"invalid name {bad_name!r}" in decision.reason


def test_a_name_too_long_once_the_domain_is_appended_cannot_happen() -> None:
    """Any valid label fits under the longest allowed domain."""
    longest = ".".join(["d" * 63, "d" * 63, "d" * 61])
    assert len(longest) == 189
    publication = publish(node("x" * 63, internal("10.0.0.1")), policy=RecordPolicy(domain=longest))
    assert len(names_of(publication)["x" * 63][0]) == 253


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "types", "published"),
    [
        pytest.param(
            [internal("10.0.0.1")], ("InternalIP", "ExternalIP"), ["10.0.0.1"], id="internal"
        ),
        pytest.param(
            [external("203.0.113.1"), internal("10.0.0.1")],
            ("InternalIP", "ExternalIP"),
            ["10.0.0.1"],
            id="internal-preferred-whatever-the-api-order",
        ),
        pytest.param(
            [external("203.0.113.1")],
            ("InternalIP", "ExternalIP"),
            ["203.0.113.1"],
            id="external-when-no-internal",
        ),
        pytest.param(
            [internal("10.0.0.1"), external("203.0.113.1")],
            ("ExternalIP", "InternalIP"),
            ["203.0.113.1"],
            id="policy-order-decides",
        ),
        pytest.param(
            [internal("10.0.0.1"), external("203.0.113.1")],
            ("InternalIP",),
            ["10.0.0.1"],
            id="types-not-listed-are-ignored",
        ),
        pytest.param(
            [internal("10.0.0.9"), internal("10.0.0.10"), internal("10.0.0.9")],
            ("InternalIP",),
            ["10.0.0.9", "10.0.0.10"],
            id="every-address-of-the-type-numeric-order-no-duplicates",
        ),
        pytest.param(
            [internal("10.0.0.1"), external("2001:db8::1")],
            ("InternalIP", "ExternalIP"),
            ["10.0.0.1", "2001:db8::1"],
            id="families-chosen-independently",
        ),
        pytest.param(
            [external("203.0.113.1"), internal("2001:db8::1"), external("2001:db8::2")],
            ("InternalIP", "ExternalIP"),
            ["203.0.113.1", "2001:db8::1"],
            id="ipv6-from-internal-ipv4-from-external",
        ),
        pytest.param(
            [internal("2001:db8::b"), internal("10.0.0.2"), internal("2001:db8::a")],
            ("InternalIP",),
            ["10.0.0.2", "2001:db8::a", "2001:db8::b"],
            id="ipv4-first-then-ipv6-numeric",
        ),
        pytest.param(
            [internal("2001:0DB8:0000:0000::0001")],
            ("InternalIP",),
            ["2001:db8::1"],
            id="ipv6-normalised",
        ),
        pytest.param(
            [internal("fe80::1%eth0"), external("2001:db8::1"), internal("10.0.0.1")],
            ("InternalIP", "ExternalIP"),
            ["10.0.0.1", "2001:db8::1"],
            id="unusable-preferred-address-falls-back-to-next-type",
        ),
        pytest.param(
            [internal("10.0.0.1"), ("Hostname", "10.0.0.2"), ("InternalDNS", "10.0.0.3")],
            ("InternalIP", "ExternalIP"),
            ["10.0.0.1"],
            id="hostname-and-dns-entries-are-not-addresses",
        ),
    ],
)
def test_addresses_follow_the_type_preference_per_ip_family(
    addresses: list[tuple[str, str]], types: tuple[str, ...], published: list[str]
) -> None:
    """For each family, every address of the first listed type that has one."""
    publication = publish(node("n", *addresses), policy=RecordPolicy(address_types=types))
    assert addresses_of(publication, "n") == published


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fe80::1%eth0", "zone id"),
        ("10.0.0.1%eth0", "zone id"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
        ("::ffff:a00:1", "IPv4-mapped"),
        ("::10.0.0.1", "::/16"),
        ("::ffff:0:a00:1", "::/16"),
        ("::", "unspecified"),
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("", "not an IP address"),
        ("10.0.0.256", "not an IP address"),
        ("010.0.0.1", "not an IP address"),
        (" 10.0.0.1", "not an IP address"),
        ("10.0.0.1/24", "not an IP address"),
        ("worker-0", "not an IP address"),
    ],
)
def test_unusable_addresses_are_refused_with_the_reason(text: str, problem: str) -> None:
    """Nothing is stripped or reinterpreted: the address is refused and the reason given."""
    with pytest.raises(ValueError, match=problem):
        parse_address(text)


@pytest.mark.parametrize(
    "text", ["10.240.0.101", "169.254.1.1", "203.0.113.7", "2001:db8::1", "fd00::1", "fe80::1"]
)
def test_ordinary_unicast_addresses_are_usable(text: str) -> None:
    """Private, public, link-local and ULA addresses are all published."""
    assert str(parse_address(text)) == text
    assert address_problem(ip(text)) is None


def test_a_zone_id_on_a_parsed_address_is_a_problem() -> None:
    """Python parses fe80::1%eth0; the policy still refuses it."""
    assert address_problem(ip("fe80::1%eth0")) == "has a zone id"


@pytest.mark.parametrize(
    ("addresses", "in_reason"),
    [
        pytest.param([], ["no usable InternalIP or ExternalIP address"], id="none"),
        pytest.param(
            [hostname("worker-0"), ("InternalDNS", "w0.example")],
            ["no usable InternalIP or ExternalIP address"],
            id="names-only",
        ),
        pytest.param([internal("fe80::1%eth0")], ["'fe80::1%eth0': has a zone id"], id="zone"),
        pytest.param(
            [internal("::ffff:10.0.0.1")],
            ["'::ffff:10.0.0.1': is an IPv4-mapped IPv6 address"],
            id="mapped",
        ),
        pytest.param([external("10.0.0.x")], ["'10.0.0.x': is not an IP address"], id="garbage"),
        pytest.param(
            [internal(""), external("127.0.0.1")],
            ["'': is not an IP address", "'127.0.0.1': is a loopback address"],
            id="all-listed",
        ),
    ],
)
def test_a_node_without_a_usable_address_is_skipped_and_the_reason_says_why(
    addresses: list[tuple[str, str]], in_reason: list[str]
) -> None:
    """No line with an empty or broken address is ever published; dump explains it."""
    publication = publish(node("worker-0", *addresses))
    assert len(publication.records) == 0
    decision = decision_of(publication, "worker-0")
    assert not decision.published
    assert decision.addresses == ()
    assert decision.names == ("worker-0.node.internal", "worker-0")
    assert decision.reason is not None
    assert "no usable InternalIP or ExternalIP address" in decision.reason
    for part in in_reason:
        assert part in decision.reason


def test_an_ignored_unusable_address_is_noted_on_a_published_node() -> None:
    """A zone address next to a good one is not silent either."""
    publication = publish(node("w", internal("10.0.0.1"), internal("fe80::1%eth0")))
    decision = decision_of(publication, "w")
    assert decision.published
    assert decision.reason == "ignored InternalIP 'fe80::1%eth0': has a zone id"


# --- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "exclude", "published"),
    [
        (True, True, True),
        (False, True, False),
        (None, True, False),
        (False, False, True),
        (None, False, True),
    ],
)
def test_not_ready_nodes_are_left_out_only_when_asked(
    ready: bool | None, exclude: bool, published: bool
) -> None:
    """Default keeps names stable; with the option, anything but Ready=True is skipped."""
    publication = publish(
        node("w", internal("10.0.0.1"), ready=ready),
        policy=RecordPolicy(exclude_not_ready=exclude),
    )
    decision = decision_of(publication, "w")
    assert decision.published is published
    assert (len(publication.records) == 1) is published
    assert decision.reason == (None if published else "not ready")


@pytest.mark.parametrize(
    ("unschedulable", "exclude", "published"),
    [(True, True, False), (False, True, True), (True, False, True)],
)
def test_unschedulable_nodes_are_left_out_only_when_asked(
    unschedulable: bool, exclude: bool, published: bool
) -> None:
    """A cordoned node keeps its name unless exclude_unschedulable is set."""
    publication = publish(
        node("w", internal("10.0.0.1"), unschedulable=unschedulable),
        policy=RecordPolicy(exclude_unschedulable=exclude),
    )
    decision = decision_of(publication, "w")
    assert decision.published is published
    assert decision.reason == (None if published else "unschedulable")


def test_a_skipped_node_reports_every_reason_and_what_it_would_publish() -> None:
    """dump shows the names and addresses a skipped node would have had."""
    policy = RecordPolicy(exclude_not_ready=True, exclude_unschedulable=True)
    publication = publish(
        node("w", internal("10.0.0.1"), ready=False, unschedulable=True), policy=policy
    )
    decision = decision_of(publication, "w")
    assert decision.reason == "not ready; unschedulable"
    assert decision.names == ("w.node.internal", "w")
    assert decision.addresses == (ip("10.0.0.1"),)
    assert decision.ready is False
    assert decision.unschedulable is True


@pytest.mark.parametrize(
    ("skipped", "reason", "text"),
    [
        (node("Bad_Name", internal("10.0.0.1")), SkipReason.INVALID_NAME, "invalid name"),
        (node("api.cluster.local", internal("10.0.0.1")), SkipReason.REFUSED_NAME, "records."),
        (node("w", hostname("w")), SkipReason.NO_ADDRESS, "no usable"),
        (node("w", internal("10.240.0.40")), SkipReason.NO_ADDRESS, "belongs to a static host"),
        (node("w", internal("10.0.0.1"), ready=None), SkipReason.NOT_READY, "not ready"),
        (node("w", internal("10.0.0.1"), unschedulable=True), SkipReason.UNSCHEDULABLE, "unsch"),
        (node("lb-0", internal("10.0.0.1")), SkipReason.NAME_COLLISION, "lost every name"),
        # Several causes: the first is the one counted.
        (node("w", ready=False, unschedulable=True), SkipReason.NO_ADDRESS, "no usable"),
        (node("w", internal("10.0.0.1"), ready=False, unschedulable=True), "not_ready", "not"),
        (node("Bad_", ready=False), SkipReason.INVALID_NAME, "invalid name"),
    ],
)
def test_every_skip_has_one_reason_code_and_its_text(
    skipped: NodeInfo, reason: SkipReason, text: str
) -> None:
    """The metric label comes from the cause, not the wording; the text says the same first."""
    policy = RecordPolicy(exclude_not_ready=True, exclude_unschedulable=True)
    publication = publish(skipped, statics=(static(("lb-0",), "10.240.0.40"),), policy=policy)
    decision = decision_of(publication, skipped.name)
    assert (decision.published, decision.skip) == (False, reason)
    assert text in (decision.reason or "").split(";")[0]


def test_a_published_node_has_no_skip_reason_even_with_a_note() -> None:
    publication = publish(node("w", internal("10.0.0.1"), internal("junk")))
    decision = decision_of(publication, "w")
    assert decision.published and decision.skip is None and "junk" in (decision.reason or "")


def test_an_excluded_node_keeps_its_names_from_others() -> None:
    """A skipped node publishes nothing but still holds its names: another node's Hostname
    does not take them while it is NotReady (issue 12 review), and the collision says so."""
    publication = publish(
        node("a", internal("10.0.0.1"), ready=False),
        node("b", internal("10.0.0.2"), hostname("a")),
        policy=RecordPolicy(exclude_not_ready=True),
    )
    assert names_of(publication)["b"] == ("b.node.internal", "b")
    assert "a" not in publication.records.by_name()
    assert publication.collisions == (
        Collision("a", "a", ("b",)),
        Collision("a.node.internal", "a", ("b",)),
    )
    assert "lost name 'a' to node 'a'" in (decision_of(publication, "b").reason or "")


# --- static hosts -------------------------------------------------------------------------


def test_static_hosts_are_published_with_the_domain_treatment() -> None:
    """lb-0 from the static file resolves as lb-0.node.internal and lb-0."""
    publication = publish(
        statics=(static(("lb-0", "api.lab.example", "Api"), "10.240.0.40"),),
    )
    (host,) = publication.records.hosts
    assert host.names == (
        "lb-0.node.internal",
        "lb-0",
        "api.lab.example",
        "api.node.internal",
        "api",
    )
    assert host.origin == "static"
    assert host.node is None
    assert host.addresses == (ip("10.240.0.40"),)
    assert publication.decisions == ()


def test_static_hosts_under_an_empty_domain_keep_their_names() -> None:
    """No domain: the names exactly as written (lower-cased)."""
    publication = publish(
        statics=(static(("lb-0", "api"), "10.240.0.40"),), policy=RecordPolicy(domain="")
    )
    assert publication.records.hosts[0].names == ("lb-0", "api")


def test_static_host_addresses_are_sorted_and_deduplicated() -> None:
    """IPv4 first, numeric, each once."""
    publication = publish(
        statics=(static(("lb",), "2001:db8::1", "10.0.0.10", "10.0.0.9", "10.0.0.10"),)
    )
    assert [str(a) for a in publication.records.hosts[0].addresses] == [
        "10.0.0.9",
        "10.0.0.10",
        "2001:db8::1",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        static(("bad_name",), "10.0.0.1"),
        static(("ok",)),
        Host(names=(), addresses=(ip("10.0.0.1"),), origin="static"),
        static(("ok",), "fe80::1%eth0"),
        static(("ok",), "::ffff:10.0.0.1"),
    ],
)
def test_a_static_host_not_from_the_parser_is_a_caller_bug(bad: Host) -> None:
    """parse_hosts validates; anything else reaching the policy raises instead of publishing."""
    with pytest.raises(ValueError, match="static host"):
        publish(statics=(bad,))


# --- collisions ---------------------------------------------------------------------------


def test_a_static_name_beats_a_node_name() -> None:
    """A Node registered as lb-0 cannot hijack the admin's static lb-0; the collision is
    reported (a kubelet chooses its own Node's name, the static file is the admin's)."""
    publication = publish(
        node("lb-0", internal("10.240.0.99")),
        statics=(static(("lb-0",), "10.9.9.9"),),
    )
    assert names_of(publication) == {"lb-0.node.internal": ("lb-0.node.internal", "lb-0")}
    assert publication.records.hosts[0].origin == "static"
    assert publication.collisions == (
        Collision("lb-0", "static:lb-0.node.internal", ("lb-0",)),
        Collision("lb-0.node.internal", "static:lb-0.node.internal", ("lb-0",)),
    )


def test_a_node_losing_its_names_to_a_static_host_keeps_its_hostname_alias() -> None:
    """The loser drops only the colliding names; the next name becomes canonical."""
    publication = publish(
        node("api", internal("10.240.0.99"), hostname("vm-9")),
        statics=(static(("lb-0", "api"), "10.240.0.40"),),
    )
    by_name = publication.records.by_name()
    assert by_name["api"].origin == "static"
    assert by_name["vm-9"].names == ("vm-9.node.internal", "vm-9")
    assert by_name["vm-9"].node == "api"


def test_a_static_name_beats_a_hostname_alias() -> None:
    """The operator's static file outranks what a kubelet claims as its Hostname."""
    publication = publish(
        node("worker-0", internal("10.240.0.101"), hostname("api")),
        statics=(static(("api",), "10.240.0.40"),),
    )
    assert names_of(publication)["worker-0"] == ("worker-0.node.internal", "worker-0")
    assert names_of(publication)["api.node.internal"] == ("api.node.internal", "api")
    decision = decision_of(publication, "worker-0")
    assert decision.published
    assert decision.reason == (
        "lost name 'api' to static host 'api.node.internal'; "
        "lost name 'api.node.internal' to static host 'api.node.internal'"
    )


def test_a_node_name_beats_another_nodes_hostname_alias_whatever_the_order() -> None:
    """metadata.name outranks an alias even when the alias owner sorts first."""
    publication = publish(
        node("alpha", internal("10.0.0.1"), hostname("zulu")),
        node("zulu", internal("10.0.0.2")),
    )
    assert names_of(publication)["zulu"] == ("zulu.node.internal", "zulu")
    assert names_of(publication)["alpha"] == ("alpha.node.internal", "alpha")
    assert [c.winner for c in publication.collisions] == ["zulu", "zulu"]
    assert [c.losers for c in publication.collisions] == [("alpha",), ("alpha",)]


def test_an_alias_of_several_nodes_goes_to_none_of_them() -> None:
    """Three Hostname aliases for one name: no node keeps it (whichever sorts first could be
    the one that took it over); each collision lists them all, each decision says so."""
    publication = publish(
        node("w-2", internal("10.0.0.2"), hostname("shared")),
        node("w-10", internal("10.0.0.10"), hostname("shared")),
        node("w-1", internal("10.0.0.1"), hostname("shared")),
    )
    assert "shared" not in publication.records.by_name()
    assert publication.collisions == (
        Collision("shared", None, ("w-1", "w-10", "w-2")),
        Collision("shared.node.internal", None, ("w-1", "w-10", "w-2")),
    )
    for name in ("w-1", "w-10", "w-2"):
        assert names_of(publication)[name] == (f"{name}.node.internal", name)
        assert (
            "dropped name 'shared': the Hostname of more than one node"
            " (node 'w-1', node 'w-10', node 'w-2')"
        ) in (decision_of(publication, name).reason or "")


def test_equal_node_ranks_go_to_the_lexically_smaller_owner() -> None:
    """A node named w-1.node.internal and a node w-1 both claim w-1.node.internal as their
    own name: w-1 (which sorts first, as a bare name always does) keeps it."""
    publication = publish(
        node("w-1.node.internal", internal("10.0.0.9")),
        node("w-1", internal("10.0.0.1")),
    )
    assert publication.records.by_name()["w-1.node.internal"].node == "w-1"
    assert publication.collisions == (
        Collision("w-1.node.internal", "w-1", ("w-1.node.internal",)),
    )
    assert not decision_of(publication, "w-1.node.internal").published


def test_static_hosts_with_the_same_canonical_name_are_merged() -> None:
    """Like lines with the same first name in the static file: one host, no collision."""
    publication = publish(
        statics=(static(("lb-0", "haproxy"), "10.0.0.2"), static(("lb-0", "api"), "10.0.0.1")),
    )
    (host,) = publication.records.hosts
    assert host.names == (
        "lb-0.node.internal",
        "lb-0",
        "api.node.internal",
        "api",
        "haproxy.node.internal",
        "haproxy",
    )
    assert host.addresses == (ip("10.0.0.1"), ip("10.0.0.2"))
    assert publication.collisions == ()


def test_two_static_hosts_sharing_a_name_resolve_lexically() -> None:
    """Static against static: the smaller canonical name keeps the shared name."""
    publication = publish(
        statics=(static(("zz", "www"), "10.0.0.2"), static(("aa", "www"), "10.0.0.1")),
    )
    assert publication.records.by_name()["www"].canonical == "aa.node.internal"
    assert names_of(publication)["zz.node.internal"] == ("zz.node.internal", "zz")


def test_a_node_that_loses_every_name_is_skipped_with_the_reason() -> None:
    """Two node names folding to the same lower-case name: one node only."""
    publication = publish(node("w", internal("10.0.0.1")), node("W", internal("10.0.0.2")))
    assert [host.node for host in publication.records.hosts] == ["W"]
    decision = decision_of(publication, "w")
    assert not decision.published
    assert decision.names == ()
    assert decision.reason == (
        "lost every name; lost name 'w' to node 'W'; lost name 'w.node.internal' to node 'W'"
    )


def test_a_node_that_loses_its_canonical_name_is_published_under_the_rest() -> None:
    """Losing the node names still leaves its Hostname alias."""
    publication = publish(
        node("zeta", internal("10.0.0.1"), hostname("vm-9")),
        node("ZETA", internal("10.0.0.2")),
    )
    assert names_of(publication)["zeta"] == ("vm-9.node.internal", "vm-9")
    decision = decision_of(publication, "zeta")
    assert decision.published
    assert decision.names == ("vm-9.node.internal", "vm-9")


def test_a_dotted_node_name_equal_to_another_nodes_fqdn_loses_to_the_shorter_owner() -> None:
    """worker-0 and worker-0.node.internal both claim the FQDN; lexical order decides."""
    publication = publish(
        node("worker-0.node.internal", internal("10.0.0.2")),
        node("worker-0", internal("10.0.0.1")),
    )
    assert publication.records.by_name()["worker-0.node.internal"].node == "worker-0"
    assert not decision_of(publication, "worker-0.node.internal").published


def test_every_published_name_belongs_to_exactly_one_host() -> None:
    """A messy mix of collisions still leaves by_name() unambiguous."""
    publication = publish(
        node("a", internal("10.0.0.1"), hostname("b")),
        node("b", internal("10.0.0.2"), hostname("c")),
        node("c", internal("10.0.0.3"), hostname("a")),
        statics=(static(("a", "b", "c", "d"), "10.0.0.9"),),
    )
    all_names = [name for host in publication.records.hosts for name in host.names]
    assert len(all_names) == len(set(all_names))
    assert names_of(publication)["a.node.internal"] == tuple(
        name for short in "abcd" for name in (f"{short}.node.internal", short)
    )


# --- ordering -----------------------------------------------------------------------------


def test_hosts_are_sorted_by_canonical_name_and_decisions_by_node_name() -> None:
    """Stable output: a sink compares record sets with one ==."""
    publication = publish(
        node("zz.example", internal("10.0.0.3")),
        node("b", internal("10.0.0.2")),
        node("a", internal("10.0.0.1")),
        node("bad_", internal("10.0.0.4")),
        statics=(static(("m",), "10.0.0.5"),),
        policy=RecordPolicy(allowed_suffixes=("example",)),
    )
    assert [h.canonical for h in publication.records.hosts] == [
        "a.node.internal",
        "b.node.internal",
        "m.node.internal",
        "zz.example",
    ]
    assert [d.node for d in publication.decisions] == ["a", "b", "bad_", "zz.example"]


def test_a_changed_policy_applies_to_nodes_already_seen() -> None:
    """Memoisation is keyed by the policy too: a new domain changes the names."""
    nodes = [node("w", internal("10.0.0.1"))]
    first = build_publication(nodes, (), RecordPolicy(domain="one.example"))
    second = build_publication(nodes, (), RecordPolicy(domain="two.example"))
    assert first.records.hosts[0].canonical == "w.one.example"
    assert second.records.hosts[0].canonical == "w.two.example"


# --- properties ---------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["a", "b", "w-1", "W-1", "a.node.internal", "b.example", "x_y", "-z"]),
    st.text(alphabet="abAB.-_", min_size=1, max_size=5),
)
ADDRESS_TEXT = st.one_of(
    st.sampled_from(
        ["10.0.0.1", "10.0.0.2", "2001:db8::1", "fe80::1%eth0", "::ffff:10.0.0.1", "junk", ""]
    ),
    st.ip_addresses().map(str),
)
ADDRESS_ENTRY = st.one_of(
    st.tuples(st.sampled_from(["InternalIP", "ExternalIP", "InternalDNS"]), ADDRESS_TEXT),
    st.tuples(st.just("Hostname"), NAMES),
)
NODES = st.builds(
    NodeInfo,
    name=NAMES,
    addresses=st.lists(ADDRESS_ENTRY, max_size=4).map(tuple),
    ready=st.sampled_from([True, False, None]),
    unschedulable=st.booleans(),
)
STATIC_HOSTS = st.builds(
    Host,
    names=st.lists(
        st.sampled_from(["a", "b", "lb-0", "api", "w-1", "a.node.internal"]),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(tuple),
    addresses=st.lists(
        st.sampled_from(["10.0.0.1", "10.0.0.9", "2001:db8::9"]).map(ip), min_size=1, max_size=2
    ).map(tuple),
    origin=st.just("static"),
)
POLICIES = st.builds(
    RecordPolicy,
    domain=st.sampled_from(["node.internal", "", "Lab.Example."]),
    address_types=st.sampled_from(
        [("InternalIP", "ExternalIP"), ("ExternalIP", "InternalIP"), ("InternalIP",)]
    ),
    exclude_not_ready=st.booleans(),
    exclude_unschedulable=st.booleans(),
    allowed_suffixes=st.sampled_from([(), ("example",)]),
)


@settings(deadline=None)
@given(
    nodes=st.lists(NODES, max_size=8),
    statics=st.lists(STATIC_HOSTS, max_size=3),
    policy=POLICIES,
    data=st.data(),
)
def test_the_publication_does_not_depend_on_input_order(
    nodes: list[NodeInfo], statics: list[Host], policy: RecordPolicy, data: st.DataObject
) -> None:
    """Equal input in any order gives an equal Publication (duplicates included)."""
    shuffled_nodes = data.draw(st.permutations(nodes))
    shuffled_statics = data.draw(st.permutations(statics))
    assert build_publication(nodes, statics, policy) == build_publication(
        shuffled_nodes, shuffled_statics, policy
    )


@settings(deadline=None)
@given(
    nodes=st.lists(NODES, max_size=8, unique_by=lambda n: n.name),
    statics=st.lists(STATIC_HOSTS, max_size=3),
    policy=POLICIES,
)
def test_every_publication_keeps_the_invariants_consumers_rely_on(
    nodes: list[NodeInfo], statics: list[Host], policy: RecordPolicy
) -> None:
    """Valid unique names, usable sorted addresses, one decision per node that matches."""
    publication = build_publication(nodes, statics, policy)
    hosts = publication.records.hosts
    assert [h.canonical for h in hosts] == sorted(h.canonical for h in hosts)
    all_names = [name for host in hosts for name in host.names]
    assert len(all_names) == len(set(all_names))
    for host in hosts:
        assert host.names
        assert host.addresses
        assert all(name_problem(name) is None for name in host.names)
        assert all(address_problem(address) is None for address in host.addresses)
        keys = [(a.version, int(a)) for a in host.addresses]
        assert keys == sorted(set(keys))
    assert [d.node for d in publication.decisions] == sorted(n.name for n in nodes)
    published = {h.node: h for h in hosts if h.origin == "node"}
    for decision in publication.decisions:
        assert decision.published == (decision.node in published)
        if decision.published:
            assert decision.names == published[decision.node].names
            assert decision.addresses == published[decision.node].addresses
        else:
            assert decision.reason
    by_name = publication.records.by_name()
    for collision in publication.collisions:
        assert collision.winner not in collision.losers
        host = by_name.get(collision.name)
        if collision.winner is None:  # a contested alias: nobody's
            assert host is None
        elif collision.winner.startswith("static:"):
            assert host is not None and host.origin == "static"
        else:  # the winning node publishes it, or holds it while skipped
            assert host is None or host.node == collision.winner
