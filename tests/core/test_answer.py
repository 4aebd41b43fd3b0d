"""The DNS answer rules (nodehosts.core.dns.answer), as a resolver would see them on the wire.

Queries are built and replies parsed with dnspython, so both sides of every check are a real
DNS implementation's reading of the bytes, not ours.
"""

from __future__ import annotations

import gc
import ipaddress
import struct
import tracemalloc

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodehosts.core.dns.answer import Answerer, Forward
from nodehosts.core.dns.table import MAX_CACHED, AnswerTable, _changed_hosts
from nodehosts.core.dns.zone import ZoneConfig, next_serial
from nodehosts.core.model import Host, HostChanges, RecordSet
from tests.helpers.records import node_host

ip = ipaddress.ip_address
SERIAL = 1_790_000_000
ZONE = ZoneConfig(domain="node.internal")


def static(*names: str, addresses: tuple[str, ...]) -> Host:
    return Host(names=names, addresses=tuple(ip(a) for a in addresses), origin="static")


HOSTS = (
    node_host("worker-0", "10.240.0.101"),
    node_host("worker-1", "10.240.0.102", "fd00:10:240::102"),
    node_host("big", *(f"10.240.1.{i}" for i in range(1, 41))),  # 640 bytes of A records
    node_host("huge", *(f"10.240.2.{i}" for i in range(1, 101))),  # 1600 bytes of A records
    static("lb-0.node.internal", "lb-0", addresses=("10.240.0.40",)),
    static("ntp", addresses=("10.240.0.50",)),
    static("db.eu.node.internal", addresses=("10.240.0.60",)),
    static("registry.lab.example", addresses=("10.240.0.70",)),
)
RECORDS = RecordSet(tuple(sorted(HOSTS, key=lambda h: h.canonical)))


@pytest.fixture(scope="module")
def answerer() -> Answerer:
    return Answerer.for_records(RECORDS, ZONE, serial=SERIAL)


def ask(
    answerer: Answerer,
    name: str,
    rdtype: str = "A",
    *,
    transport: str = "udp",
    recursion_allowed: bool = False,
    **make: object,
) -> dns.message.Message:
    """One query through the handler; the reply parsed by dnspython."""
    query = dns.message.make_query(name, rdtype, **make)  # type: ignore[arg-type]
    result = answerer.handle(
        query.to_wire(),
        transport=transport,  # type: ignore[arg-type]
        recursion_allowed=recursion_allowed,
    )
    assert isinstance(result, bytes), f"expected a reply, got {result!r}"
    reply = dns.message.from_wire(result)
    assert reply.id == query.id
    assert reply.question == query.question
    return reply


def answers(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


def negative_soa(reply: dns.message.Message) -> tuple[str, int, int]:
    """(owner, TTL, MINIMUM) of the one SOA in the authority section."""
    (rrset,) = reply.authority
    assert rrset.rdtype == dns.rdatatype.SOA
    (soa,) = rrset
    return rrset.name.to_text(), rrset.ttl, soa.minimum


# --- the zone's own names


def test_a_node_fqdn_is_answered_authoritatively_with_its_address(answerer: Answerer) -> None:
    """worker-0.node.internal A -> 10.240.0.101, AA, TTL 30."""
    reply = ask(answerer, "worker-0.node.internal")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert answers(reply) == ["10.240.0.101"]
    assert reply.answer[0].ttl == 30


def test_aaaa_is_answered_for_nodes_with_an_ipv6_address(answerer: Answerer) -> None:
    """worker-1 has both families; each query type gets its own."""
    assert answers(ask(answerer, "worker-1.node.internal", "AAAA")) == ["fd00:10:240::102"]
    assert answers(ask(answerer, "worker-1.node.internal", "A")) == ["10.240.0.102"]


def test_bare_node_and_static_names_are_answered(answerer: Answerer) -> None:
    """Single-label names that are published answer like their FQDN, authoritatively."""
    for name, address in (
        ("worker-0", "10.240.0.101"),
        ("lb-0", "10.240.0.40"),
        ("ntp", "10.240.0.50"),
    ):
        reply = ask(answerer, name)
        assert answers(reply) == [address]
        assert reply.flags & dns.flags.AA


def test_a_single_label_name_that_is_not_published_is_not_ours(answerer: Answerer) -> None:
    """`printer` goes upstream when recursion is allowed and is REFUSED otherwise."""
    query = dns.message.make_query("printer", "A").to_wire()
    assert isinstance(answerer.handle(query, transport="udp", recursion_allowed=True), Forward)
    assert ask(answerer, "printer").rcode() == dns.rcode.REFUSED


def test_published_names_outside_the_zone_are_answered(answerer: Answerer) -> None:
    """A static name in another domain is still ours: answered, never forwarded."""
    reply = ask(answerer, "registry.lab.example", recursion_allowed=True)
    assert answers(reply) == ["10.240.0.70"]
    assert ask(answerer, "registry.lab.example", "MX", recursion_allowed=True).rcode() == 0


def test_names_match_in_any_case_and_the_question_is_echoed_byte_for_byte(
    answerer: Answerer,
) -> None:
    """0x20: WoRKeR-0.NoDe.InTeRnAl is worker-0, and the reply repeats our spelling."""
    query = dns.message.make_query("WoRKeR-0.NoDe.InTeRnAl", "A", use_edns=0)
    wire = query.to_wire()
    reply = answerer.handle(wire, transport="udp", recursion_allowed=False)
    assert isinstance(reply, bytes)
    question_length = len(b"\x08WoRKeR-0\x04NoDe\x08InTeRnAl\x00") + 4
    assert reply[12 : 12 + question_length] == wire[12 : 12 + question_length]
    assert answers(dns.message.from_wire(reply)) == ["10.240.0.101"]


def test_other_types_on_a_node_name_are_nodata_with_the_soa(answerer: Answerer) -> None:
    """MX on worker-0: NOERROR, no answer, SOA with the negative TTL; not forwarded."""
    for name in ("worker-0.node.internal", "worker-0"):
        reply = ask(answerer, name, "MX", recursion_allowed=True)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.flags & dns.flags.AA
        assert reply.answer == []
        assert negative_soa(reply) == ("node.internal.", 5, 5)


def test_aaaa_on_an_ipv4_only_node_is_nodata(answerer: Answerer) -> None:
    """A name with only A records exists: AAAA is NODATA, not NXDOMAIN."""
    reply = ask(answerer, "worker-0.node.internal", "AAAA")
    assert (reply.rcode(), reply.answer) == (dns.rcode.NOERROR, [])
    assert negative_soa(reply)[1] == 5


def test_unknown_names_in_the_zone_are_nxdomain_with_the_soa(answerer: Answerer) -> None:
    """worker-9.node.internal: NXDOMAIN, AA, SOA with TTL and MINIMUM = negative TTL."""
    for name in ("worker-9.node.internal", "x.worker-0.node.internal"):
        reply = ask(answerer, name, recursion_allowed=True)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.flags & dns.flags.AA
        assert negative_soa(reply) == ("node.internal.", 5, 5)


def test_the_negative_ttl_is_its_own_setting() -> None:
    """negative_ttl=7, ttl=300: answers live 300 s, negative answers 7 s."""
    answerer = Answerer.for_records(RECORDS, ZoneConfig(ttl=300, negative_ttl=7), serial=SERIAL)
    assert ask(answerer, "worker-0").answer[0].ttl == 300
    assert negative_soa(ask(answerer, "nope.node.internal")) == ("node.internal.", 7, 7)


def test_names_between_a_published_name_and_the_apex_exist(answerer: Answerer) -> None:
    """eu.node.internal is an empty non-terminal above db.eu.node.internal: NODATA (RFC 8020)."""
    reply = ask(answerer, "eu.node.internal")
    assert (reply.rcode(), reply.answer) == (dns.rcode.NOERROR, [])
    assert answers(ask(answerer, "db.eu.node.internal")) == ["10.240.0.60"]


def test_the_apex_has_soa_and_ns(answerer: Answerer) -> None:
    """SOA with our serial and the negative TTL as MINIMUM; NS ns.node.internal."""
    reply = ask(answerer, "node.internal", "SOA")
    assert reply.flags & dns.flags.AA
    (soa,) = reply.answer[0]
    assert (soa.mname.to_text(), soa.rname.to_text()) == (
        "ns.node.internal.",
        "hostmaster.node.internal.",
    )
    assert (soa.serial, soa.minimum) == (SERIAL, 5)
    assert answers(ask(answerer, "node.internal", "NS")) == ["ns.node.internal."]
    apex_a = ask(answerer, "node.internal", "A")
    assert (apex_a.rcode(), apex_a.answer) == (dns.rcode.NOERROR, [])


def test_the_nameserver_gets_glue_when_its_addresses_are_configured() -> None:
    """nameserver lb-dns.node.internal at 10.240.0.40: NS answer carries the A as glue."""
    zone = ZoneConfig(nameserver="lb-dns.node.internal", nameserver_addresses=(ip("10.240.0.40"),))
    answerer = Answerer.for_records(RECORDS, zone, serial=SERIAL)
    reply = ask(answerer, "node.internal", "NS")
    assert answers(reply) == ["lb-dns.node.internal."]
    assert [rd.to_text() for rrset in reply.additional for rd in rrset] == ["10.240.0.40"]
    assert answers(ask(answerer, "lb-dns.node.internal")) == ["10.240.0.40"]


def test_the_soa_serial_is_time_based_and_strictly_increasing() -> None:
    """Unix time when it moved on; previous + 1 within the same second or a clock step back."""
    assert next_serial(None, 1_790_000_000.7) == 1_790_000_000
    assert next_serial(1_790_000_000, 1_790_000_000.9) == 1_790_000_001
    assert next_serial(1_790_000_005, 1_790_000_001.0) == 1_790_000_006
    assert next_serial(1_790_000_005, 1_790_000_100.0) == 1_790_000_100
    assert next_serial(0xFFFFFFFF, 5.0) == 5  # RFC 1982: 5 comes after 2**32 - 1


# --- reverse lookups


def test_ptr_for_a_node_address_is_exactly_the_canonical_name(answerer: Answerer) -> None:
    """10.240.0.101 -> worker-0.node.internal. and nothing else (not the bare name)."""
    reply = ask(answerer, dns.reversename.from_address("10.240.0.101").to_text(), "PTR")
    assert reply.flags & dns.flags.AA
    assert answers(reply) == ["worker-0.node.internal."]


def test_ptr_works_for_ipv6_and_static_addresses(answerer: Answerer) -> None:
    """ip6.arpa for worker-1's IPv6 address; the static lb-0 gets its canonical name."""
    v6 = dns.reversename.from_address("fd00:10:240::102").to_text()
    assert answers(ask(answerer, v6, "PTR")) == ["worker-1.node.internal."]
    v4 = dns.reversename.from_address("10.240.0.40").to_text()
    assert answers(ask(answerer, v4, "PTR")) == ["lb-0.node.internal."]


def test_other_reverse_lookups_are_not_ours(answerer: Answerer) -> None:
    """8.8.8.8's PTR goes upstream when allowed and is REFUSED otherwise."""
    name = dns.reversename.from_address("8.8.8.8").to_text()
    query = dns.message.make_query(name, "PTR").to_wire()
    assert isinstance(answerer.handle(query, transport="udp", recursion_allowed=True), Forward)
    assert ask(answerer, name, "PTR").rcode() == dns.rcode.REFUSED


# --- forwarding and RA


def test_other_names_are_forwarded_only_when_recursion_is_allowed(answerer: Answerer) -> None:
    """example.com: Forward with our query untouched and a SERVFAIL to fall back on."""
    query = dns.message.make_query("example.com", "A", use_edns=0)
    wire = query.to_wire()
    result = answerer.handle(wire, transport="tcp", recursion_allowed=True)
    assert isinstance(result, Forward)
    assert (result.query, result.transport, result.qtype) == (wire, "tcp", 1)
    failure = dns.message.from_wire(result.failure)
    assert (failure.id, failure.rcode(), failure.question) == (
        query.id,
        dns.rcode.SERVFAIL,
        query.question,
    )
    assert failure.flags & dns.flags.RA
    refused = ask(answerer, "example.com")
    assert refused.rcode() == dns.rcode.REFUSED
    assert not refused.flags & dns.flags.RA


def test_ra_is_set_exactly_when_recursion_is_offered(answerer: Answerer) -> None:
    """Same question, two clients: RA only for the one allowed to recurse; RD is echoed."""
    assert ask(answerer, "worker-0", recursion_allowed=True).flags & dns.flags.RA
    assert not ask(answerer, "worker-0", recursion_allowed=False).flags & dns.flags.RA
    no_rd = dns.message.make_query("worker-0", "A")
    no_rd.flags &= ~dns.flags.RD
    wire = answerer.handle(no_rd.to_wire(), transport="udp", recursion_allowed=False)
    assert isinstance(wire, bytes)
    assert not dns.message.from_wire(wire).flags & dns.flags.RD


def test_zone_transfers_and_other_classes_are_refused_and_never_forwarded(
    answerer: Answerer,
) -> None:
    """AXFR of the zone and CHAOS queries: REFUSED even for clients allowed to recurse."""
    assert ask(answerer, "node.internal", "AXFR", recursion_allowed=True).rcode() == (
        dns.rcode.REFUSED
    )
    chaos = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    wire = answerer.handle(chaos.to_wire(), transport="udp", recursion_allowed=True)
    assert isinstance(wire, bytes)
    assert dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED


# --- EDNS, truncation, ANY


def test_edns_queries_get_an_opt_record_with_the_do_bit_copied(answerer: Answerer) -> None:
    """OPT in, OPT out (payload 1232); DO echoed; no OPT without EDNS."""
    plain = ask(answerer, "worker-0", use_edns=0, payload=4096)
    assert (plain.edns, plain.payload) == (0, 1232)
    assert not plain.ednsflags & dns.flags.DO
    signed = ask(answerer, "worker-0", use_edns=0, want_dnssec=True)
    assert signed.ednsflags & dns.flags.DO
    assert ask(answerer, "worker-0", use_edns=False).edns == -1


def test_edns_options_do_not_stop_the_answer(answerer: Answerer) -> None:
    """A COOKIE option (as dig sends by default) is accepted and not echoed."""
    cookie = dns.edns.GenericOption(10, bytes(range(8)))
    reply = ask(answerer, "worker-0", use_edns=0, options=[cookie])
    assert answers(reply) == ["10.240.0.101"]
    assert not reply.options


def test_an_unknown_edns_version_gets_badvers(answerer: Answerer) -> None:
    """EDNS version 1: BADVERS with an OPT of version 0."""
    query = dns.message.make_query("worker-0", "A")
    query.use_edns(1)  # make_query(use_edns=1) means version 0 in older dnspython
    result = answerer.handle(query.to_wire(), transport="udp", recursion_allowed=False)
    assert isinstance(result, bytes)
    reply = dns.message.from_wire(result)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0


def test_udp_replies_larger_than_the_client_allows_are_truncated(answerer: Answerer) -> None:
    """big (640 bytes of A): TC without EDNS, whole with EDNS 1232; huge: TC even then."""
    truncated = ask(answerer, "big", use_edns=False)
    assert truncated.flags & dns.flags.TC
    assert truncated.answer == []
    whole = ask(answerer, "big", use_edns=0, payload=1232)
    assert not whole.flags & dns.flags.TC
    assert len(answers(whole)) == 40
    capped = ask(answerer, "huge", use_edns=0, payload=4096)  # we never send more than 1232
    assert capped.flags & dns.flags.TC
    assert capped.edns == 0


def test_tcp_replies_are_never_truncated(answerer: Answerer) -> None:
    """huge over TCP: all 100 addresses, no TC."""
    reply = ask(answerer, "huge", transport="tcp", use_edns=False)
    assert not reply.flags & dns.flags.TC
    assert len(answers(reply)) == 100


def test_any_gets_one_rrset(answerer: Answerer) -> None:
    """RFC 8482: ANY on worker-1 (A and AAAA) returns only the A RRset; the apex its SOA."""
    reply = ask(answerer, "worker-1.node.internal", "ANY")
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.A]
    apex = ask(answerer, "node.internal", "ANY")
    assert [rrset.rdtype for rrset in apex.answer] == [dns.rdatatype.SOA]
    assert ask(answerer, "nope.node.internal", "ANY").rcode() == dns.rcode.NXDOMAIN


# --- odd messages


@pytest.mark.parametrize(
    "opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE, 3, 15]
)
def test_opcodes_other_than_query_get_notimp(answerer: Answerer, opcode: int) -> None:
    """NOTIFY, UPDATE, STATUS, ... : NOTIMP with the opcode echoed."""
    query = dns.message.make_query("worker-0.node.internal", "A")
    wire = bytearray(query.to_wire())
    wire[2] = (wire[2] & 0x87) | (opcode << 3)
    result = answerer.handle(bytes(wire), transport="udp", recursion_allowed=True)
    assert isinstance(result, bytes)
    assert result[:2] == wire[:2]
    assert result[3] & 0x0F == dns.rcode.NOTIMP
    assert (result[2] >> 3) & 0x0F == opcode


def test_responses_and_runts_get_no_reply(answerer: Answerer) -> None:
    """A message with QR set (could start a loop) and anything under 12 bytes: silence."""
    reply_like = bytearray(dns.message.make_query("worker-0", "A").to_wire())
    reply_like[2] |= 0x80
    for message in (bytes(reply_like), b"", b"\x12\x34", bytes(11)):
        assert answerer.handle(message, transport="udp", recursion_allowed=True) is None


def test_garbage_after_a_header_gets_formerr(answerer: Answerer) -> None:
    """A header claiming one question followed by junk: FORMERR, same ID."""
    wire = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07junk"
    result = answerer.handle(wire, transport="udp", recursion_allowed=False)
    assert isinstance(result, bytes)
    reply = dns.message.from_wire(result)
    assert (reply.id, reply.rcode()) == (0xABCD, dns.rcode.FORMERR)


@pytest.mark.parametrize("suffix", [b"\x07example\x03com\x00", b"\x04node\x08internal\x00"])
@pytest.mark.parametrize("edns", [False, True])
def test_a_name_longer_than_255_bytes_gets_formerr_and_is_never_forwarded(
    answerer: Answerer, suffix: bytes, edns: bool
) -> None:
    """Issue 12: such a name was forwarded (or NXDOMAIN in the zone); RFC 1035 caps names at
    255 bytes, so the query is malformed."""
    name = b"\x3f" + b"a" * 63
    wire_name = name * 4 + suffix  # 256 + len(suffix) bytes
    assert len(wire_name) > 255
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00"
    query += b"\x00\x01" if edns else b"\x00\x00"
    query += wire_name + b"\x00\x01\x00\x01"
    if edns:
        query += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    for transport in ("udp", "tcp"):
        reply = answerer.handle(query, transport=transport, recursion_allowed=True)
        assert isinstance(reply, bytes), reply
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 1  # FORMERR


def test_two_questions_get_formerr(answerer: Answerer) -> None:
    """QDCOUNT 2 is not a query anyone sends: FORMERR."""
    query = dns.message.make_query("worker-0", "A")
    query.question.append(dns.message.make_query("worker-1", "A").question[0])
    result = answerer.handle(query.to_wire(), transport="udp", recursion_allowed=True)
    assert isinstance(result, bytes)
    assert dns.message.from_wire(result).rcode() == dns.rcode.FORMERR


def test_a_question_with_a_compressed_name_is_answered(answerer: Answerer) -> None:
    """Legal but rare: the qname ends in a pointer (here to the ID's zero byte, i.e. the root)."""
    header = struct.pack(">HHHHHH", 0x0042, 0x0100, 1, 0, 0, 0)
    wire = header + b"\x08WoRker-0\xc0\x00" + struct.pack(">HH", 1, 1)
    result = answerer.handle(wire, transport="udp", recursion_allowed=False)
    assert isinstance(result, bytes)
    reply = dns.message.from_wire(result)
    assert (reply.id, reply.rcode()) == (0x0042, dns.rcode.NOERROR)
    assert answers(reply) == ["10.240.0.101"]
    assert result[12:22] == b"\x08WoRker-0\x00"  # echoed uncompressed, case kept


def test_before_the_first_load_zone_names_get_servfail_not_nxdomain() -> None:
    """Records not loaded yet: a cacheable NXDOMAIN would hide nodes; SERVFAIL does not."""
    answerer = Answerer.for_records(None, ZONE, serial=SERIAL)
    assert ask(answerer, "worker-0.node.internal").rcode() == dns.rcode.SERVFAIL
    query = dns.message.make_query("example.com", "A").to_wire()
    assert isinstance(answerer.handle(query, transport="udp", recursion_allowed=True), Forward)


def test_counts_group_replies_by_type_and_rcode(answerer: Answerer) -> None:
    """What metrics read: (QTYPE, RCODE) -> replies."""
    fresh = Answerer.for_records(RECORDS, ZONE, serial=SERIAL)
    ask(fresh, "worker-0")
    ask(fresh, "worker-0", "MX")
    ask(fresh, "nope.node.internal")
    assert fresh.counts.by_type_and_rcode() == {(1, 0): 1, (15, 0): 1, (1, 3): 1}
    assert fresh.counts.by_qtype() == {"A": 2, "MX": 1}
    assert fresh.counts.by_rcode() == {"NOERROR": 2, "NXDOMAIN": 1}


def test_zone_config_rejects_what_cannot_be_served() -> None:
    """An empty domain (the root), overlong labels, a TTL out of range."""
    for bad in (
        {"domain": ""},
        {"domain": "x" * 64 + ".lab"},
        {"ttl": -1},
        {"max_udp_payload": 100},
    ):
        with pytest.raises(ValueError):
            ZoneConfig(**bad)  # type: ignore[arg-type]


def test_a_rebuild_from_the_previous_answerer_answers_like_a_fresh_build() -> None:
    """Reusing encoded replies across builds never serves the old records or the old serial."""
    first = Answerer.for_records(RECORDS, ZONE, serial=SERIAL)
    changed = RecordSet(
        tuple(
            sorted(
                (
                    *HOSTS[1:],
                    node_host("worker-0", "10.240.0.199"),
                    node_host("worker-5", "10.240.0.105"),
                ),
                key=lambda h: h.canonical,
            )
        )
    )
    rebuilt = Answerer.for_records(changed, ZONE, serial=SERIAL + 1, previous=first)
    fresh = Answerer.for_records(changed, ZONE, serial=SERIAL + 1)
    for name, rdtype in [
        ("worker-0", "A"),
        ("worker-5.node.internal", "A"),
        ("worker-1", "AAAA"),
        ("worker-1", "MX"),
        ("nope.node.internal", "A"),
        ("node.internal", "SOA"),
        (dns.reversename.from_address("10.240.0.199").to_text(), "PTR"),
        (dns.reversename.from_address("10.240.0.101").to_text(), "PTR"),
    ]:
        wire = dns.message.make_query(name, rdtype, use_edns=0).to_wire()
        expected = fresh.handle(wire, transport="udp", recursion_allowed=True)
        assert rebuilt.handle(wire, transport="udp", recursion_allowed=True) == expected
    assert answers(ask(rebuilt, "worker-0")) == ["10.240.0.199"]


def test_a_small_change_is_built_from_the_previous_answerer() -> None:
    """One host changed: only its names are re-encoded, and the SOA has the new serial."""
    first = Answerer.for_records(RECORDS, ZONE, serial=SERIAL)
    hosts = [node_host("worker-0", "10.240.0.199") if h is HOSTS[0] else h for h in RECORDS.hosts]
    changed = RecordSet(tuple(hosts))
    second = Answerer.for_records(changed, ZONE, serial=SERIAL + 1, previous=first)
    assert second.table.built_from_previous and not first.table.built_from_previous
    assert answers(ask(second, "worker-0")) == ["10.240.0.199"]
    assert answers(ask(first, "worker-0")) == ["10.240.0.101"]  # the previous one is untouched
    assert ask(second, "node.internal", "SOA").answer[0][0].serial == SERIAL + 1
    assert ask(second, "nope.node.internal").authority[0][0].serial == SERIAL + 1
    assert ask(first, "nope.node.internal").authority[0][0].serial == SERIAL


# --- incremental builds: a build from the previous answerer equals a build from scratch

_CANONICAL = (
    "worker-0.node.internal",
    "worker-1.node.internal",
    "worker-2.node.internal",
    "db.eu.node.internal",
    "a.b.c.node.internal",
    "ns.node.internal",  # the nameserver's name: merged with the glue
    "registry.lab.example",
    "bad..node.internal",  # cannot be encoded: skipped
)
_ALIASES = (
    "worker-0",
    "worker-1",
    "lb",
    "lb.node.internal",
    "eu.node.internal",
    "b.node.internal",
    "1.0.240.10.in-addr.arpa",  # a published name that is also a reverse name
)
_ADDRESSES = ("10.240.0.1", "10.240.0.2", "10.240.0.3", "fd00::1", "fd00::2")
_QUESTION_NAMES = sorted(
    {
        *_CANONICAL[:-1],
        *_ALIASES,
        "c.node.internal",
        "eu.node.internal",
        "node.internal",
        "nope.node.internal",
        "worker-9",
        *(dns.reversename.from_address(a).to_text() for a in (*_ADDRESSES, "10.0.0.53")),
    }
)
_QUESTION_TYPES = ("A", "AAAA", "PTR", "ANY", "MX", "SOA", "NS")


def _host_sets() -> st.SearchStrategy[RecordSet]:
    host = st.builds(
        lambda canonical, aliases, addresses: Host(
            names=(canonical, *aliases),
            addresses=tuple(sorted((ip(a) for a in addresses), key=lambda a: (a.version, a))),
            origin="node",
            node=canonical,
        ),
        st.sampled_from(_CANONICAL[:5] * 4 + _CANONICAL[5:]),  # the odd ones force full builds
        st.lists(st.sampled_from(_ALIASES), max_size=2, unique=True),
        st.lists(st.sampled_from(_ADDRESSES), min_size=1, max_size=3, unique=True),
    )

    def record_set(hosts: list[Host], keep_duplicates: bool) -> RecordSet:
        hosts = sorted(hosts, key=lambda h: h.canonical)
        if keep_duplicates:  # not what the record policy makes: must still work (full build)
            return RecordSet(tuple(hosts))
        kept: list[Host] = []
        taken: set[str] = set()
        for h in hosts:  # like the record policy: a name belongs to one host
            names = tuple(n for n in h.names if n not in taken)
            if names and names[0] == h.canonical:
                taken.update(names)
                kept.append(Host(names, h.addresses, h.origin, h.node))
        return RecordSet(tuple(kept))

    return st.builds(record_set, st.lists(host, max_size=6), st.sampled_from([False] * 5 + [True]))


def _same_answers(built: Answerer, fresh: Answerer) -> None:
    assert built.table.answers == fresh.table.answers
    assert built.table.existing.keys() == fresh.table.existing.keys()
    assert built.table.name_count == fresh.table.name_count
    assert built.table.skipped_names == fresh.table.skipped_names
    for name in _QUESTION_NAMES:
        for rdtype in _QUESTION_TYPES:
            for use_edns in (False, 0):
                query = dns.message.make_query(name, rdtype, use_edns=use_edns)
                query.id = 4242
                wire = query.to_wire()
                expected = fresh.handle(wire, transport="udp", recursion_allowed=True)
                got = built.handle(wire, transport="udp", recursion_allowed=True)
                assert got == expected, (name, rdtype, use_edns)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.lists(_host_sets(), min_size=1, max_size=6),
    glue=st.booleans(),
)
def test_builds_from_the_previous_answerer_answer_exactly_like_builds_from_scratch(
    sequence: list[RecordSet], glue: bool
) -> None:
    """Whatever changes between record sets (hosts added, removed, changed, names moving
    between hosts, shared addresses, the nameserver's name published, unencodable names,
    duplicate names), every question gets the same bytes, with the new serial."""
    zone = ZoneConfig(domain="node.internal", nameserver_addresses=("10.0.0.53",) if glue else ())
    previous = Answerer.for_records(None, zone, serial=SERIAL)
    for step, records in enumerate(sequence, start=1):
        built = Answerer.for_records(records, zone, serial=SERIAL + step, previous=previous)
        _same_answers(built, Answerer.for_records(records, zone, serial=SERIAL + step))
        previous = built


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(_host_sets(), min_size=1, max_size=6))
def test_adopting_updates_after_every_question_was_asked_answer_like_builds_from_scratch(
    sequence: list[RecordSet],
) -> None:
    """As DnsService updates on the loop: from the changes, taking over the previous table and
    its cache of encoded replies, with every reply cached before the change. No stale reply
    survives a change."""
    before = RecordSet(())
    previous = Answerer.for_records(before, ZONE, serial=SERIAL)
    for step, records in enumerate(sequence, start=1):
        for key in list(previous.table.answers):  # every positive reply asked, so cached
            previous.table.lookup(key)
        found = _changed_hosts(before.hosts, records.hosts)
        changes = None
        if found is not None:
            removed, added = found
            changes = HostChanges(before, records, tuple(removed), tuple(added))
        built = Answerer.for_records(
            records, ZONE, serial=SERIAL + step, previous=previous, changes=changes, adopt=True
        )
        _same_answers(built, Answerer.for_records(records, ZONE, serial=SERIAL + step))
        previous, before = built, records


def test_the_random_changes_do_take_the_incremental_path() -> None:
    """The property test above would pass trivially if every build were from scratch."""
    hosts = [node_host(f"worker-{i}", f"10.240.0.{i + 1}") for i in range(3)]
    first = Answerer.for_records(RecordSet(tuple(hosts)), ZONE, serial=SERIAL)
    moved = [
        hosts[0],
        Host(("worker-1.node.internal",), hosts[1].addresses, "node", "worker-1"),
        Host((*hosts[2].names, "worker-1"), hosts[0].addresses, "node", "worker-2"),
    ]
    second = Answerer.for_records(RecordSet(tuple(moved)), ZONE, serial=SERIAL + 1, previous=first)
    assert second.table.built_from_previous
    _same_answers(second, Answerer.for_records(RecordSet(tuple(moved)), ZONE, serial=SERIAL + 1))
    assert answers(ask(second, "worker-1")) == ["10.240.0.1"]
    ptr = ask(second, dns.reversename.from_address("10.240.0.1").to_text(), "PTR")
    assert [rr.target.to_text() for rr in ptr.answer[0]] == ["worker-0.node.internal."]


def test_an_update_that_cannot_be_exact_returns_nothing_and_leaves_the_previous_answering() -> None:
    """A name moving to a host that also keeps it elsewhere cannot be updated exactly: update
    gives None (never a half-built table), the previous table answers as before, and
    `replacing` falls back to a full build."""
    previous = AnswerTable.build(RECORDS, ZONE, serial=SERIAL)
    before = {name: previous.answers.get(name) for name in previous.answers}
    # worker-0 published by two hosts: the full build lets the last one win, update cannot.
    twice = RecordSet((*RECORDS.hosts, node_host("worker-0", "10.240.9.9")))
    assert AnswerTable.update(previous, twice, serial=SERIAL + 1) is None
    assert previous.answers == before
    assert answers(ask(Answerer(previous), "worker-0")) == ["10.240.0.101"]
    replaced = AnswerTable.replacing(previous, twice, ZONE, serial=SERIAL + 1)
    assert not replaced.built_from_previous
    assert replaced.answers == AnswerTable.build(twice, ZONE, serial=SERIAL + 1).answers


def test_an_adopting_update_that_cannot_be_exact_changes_nothing() -> None:
    """With adopt, an update changes the previous table's dicts in place; one that finds it
    cannot be exact (here: the added host's name is taken by a host that stays) must return
    before touching them, so the previous table still answers and can still be updated."""
    previous = AnswerTable.build(RECORDS, ZONE, serial=SERIAL)
    before = dict(previous.answers)
    extra = node_host("worker-1", "10.240.9.9")
    clash = RecordSet((*RECORDS.hosts, extra))
    changes = HostChanges(before=RECORDS, after=clash, removed=(), added=(extra,))
    assert (
        AnswerTable.update(previous, clash, serial=SERIAL + 1, changes=changes, adopt=True) is None
    )
    assert previous.answers == before
    assert answers(ask(Answerer(previous), "worker-1")) == ["10.240.0.102"]
    moved = RecordSet(
        tuple(
            sorted((*RECORDS.hosts, node_host("worker-9", "10.240.9.9")), key=lambda h: h.canonical)
        )
    )
    later = AnswerTable.update(previous, moved, serial=SERIAL + 1)
    assert later is not None and later.built_from_previous


# --- property tests: the handler never raises and what it says is DNS


def _queries() -> st.SearchStrategy[bytes]:
    names = st.sampled_from(
        [
            "worker-0",
            "WORKER-1.node.internal",
            "big",
            "nope.node.internal",
            "example.com",
            ".",
            "node.internal",
        ]
    )
    types = st.sampled_from(["A", "AAAA", "MX", "ANY", "PTR", "SOA", "NS", "TXT", "AXFR"])
    edns = st.sampled_from([False, 0, 1])
    return st.builds(
        lambda name, rdtype, use_edns: dns.message.make_query(
            name, rdtype, use_edns=use_edns
        ).to_wire(),
        names,
        types,
        edns,
    )


def _mutated() -> st.SearchStrategy[bytes]:
    """Valid queries with bytes flipped, cut off, inserted or appended."""

    def mutate(wire: bytes, data: st.DataObject) -> bytes:
        out = bytearray(wire)
        for _ in range(data.draw(st.integers(1, 4))):
            kind = data.draw(st.sampled_from(["flip", "cut", "insert", "append"]))
            at = data.draw(st.integers(0, max(0, len(out) - 1)))
            if kind == "flip" and out:
                out[at] = data.draw(st.integers(0, 255))
            elif kind == "cut":
                del out[at:]
            elif kind == "insert":
                out[at:at] = data.draw(st.binary(min_size=1, max_size=8))
            else:
                out += data.draw(st.binary(min_size=1, max_size=32))
        return bytes(out)

    return st.builds(mutate, _queries(), st.data())


def _check_reply(query: bytes, result: object) -> None:
    if result is None:
        return
    if isinstance(result, Forward):
        result = result.failure
    assert isinstance(result, bytes)
    assert result[:2] == query[:2]
    assert result[2] & 0x80  # QR
    if (result[2] >> 3) & 0x0F:
        # NOTIMP for an opcode older dnspython cannot name: check the rest of the message.
        assert result[3] & 0x0F == dns.rcode.NOTIMP
        result = result[:2] + bytes((result[2] & 0x87,)) + result[3:]
    dns.message.from_wire(result)  # raises if we sent something that is not DNS


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packet=st.one_of(st.binary(max_size=600), _mutated(), _queries()))
def test_random_and_mutated_packets_never_raise_and_every_reply_parses(packet: bytes) -> None:
    """Whatever arrives, the handler returns None, a Forward or a reply dnspython can read."""
    answerer = _PROPERTY_ANSWERER
    for transport in ("udp", "tcp"):
        for allowed in (False, True):
            result = answerer.handle(packet, transport=transport, recursion_allowed=allowed)  # type: ignore[arg-type]
            _check_reply(packet, result)
            if transport == "udp" and isinstance(result, bytes):
                assert len(result) <= ZONE.max_udp_payload
    assert answerer.counts.errors == 0


_PROPERTY_ANSWERER = Answerer.for_records(RECORDS, ZONE, serial=SERIAL)


def test_an_update_does_not_keep_the_previous_generation_alive() -> None:
    """Issue 12 (memory during a burst): an Answerer built from a previous one kept that one's
    whole memo (every entry and key of the previous generation) alive as long as it lived.
    Built from a predecessor whose addresses all changed, it now holds about what a fresh
    build of the same records holds."""
    import gc
    import tracemalloc

    def records(offset: int) -> RecordSet:
        return RecordSet(
            tuple(
                node_host(f"w-{i:04d}", f"10.{offset}.{i // 250}.{i % 250 + 1}")
                for i in range(2000)
            )
        )

    old, new = records(1), records(2)
    tracemalloc.start()
    try:
        fresh = Answerer.for_records(new, ZONE, serial=1)
        gc.collect()
        fresh_bytes, _ = tracemalloc.get_traced_memory()
        del fresh
        gc.collect()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        previous = Answerer.for_records(old, ZONE, serial=1)
        chained = Answerer.for_records(new, ZONE, serial=2, previous=previous)
        del previous
        gc.collect()
        chained_bytes = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert chained.table.built_from_previous
    assert chained_bytes < 1.3 * fresh_bytes, (chained_bytes, fresh_bytes)


# --- memory: replies are encoded when asked, into a bounded cache


def ptr_targets(reply: dns.message.Message) -> list[str]:
    return [rr.target.to_text() for rrset in reply.answer for rr in rrset]


def _many_hosts(count: int, prefix: str) -> RecordSet:
    """`count` hosts like the daemon publishes for Nodes: FQDN and bare name, one address."""
    hosts = (
        node_host(f"{prefix}-{i:05d}", f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}")
        for i in range(count)
    )
    return RecordSet(tuple(sorted(hosts, key=lambda h: h.canonical)))


def test_a_table_costs_under_half_a_kilobyte_per_host_not_three() -> None:
    """Encoding every reply up front cost ~3.2 KB per host (66-69 MiB of the daemon at 20,000
    Nodes); the table now keeps the names and what they point at, and encodes replies when
    asked. Measured with tracemalloc: the table and the name encodings it holds."""
    records = _many_hosts(3000, "mem")
    gc.collect()
    tracemalloc.start()
    try:
        table = AnswerTable.build(records, ZONE, serial=SERIAL)
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.name_count >= 3 * 3000
    # ~260 bytes here (dict sizes step by powers of two); 3.3 KB with every reply encoded.
    assert used / 3000 < 350, f"{used / 3000:.0f} bytes per host"


def test_the_reply_cache_is_bounded_and_answers_stay_right() -> None:
    """Asking every name of a cluster larger than the cache (a resolver walking all Nodes, or
    a flood) keeps the cache at its bound; names asked after their reply was evicted are
    answered the same; names that do not exist are never cached."""
    count = MAX_CACHED + 500
    records = _many_hosts(count, "flood")
    answerer = Answerer.for_records(records, ZONE, serial=SERIAL)
    first = ask(answerer, "flood-00000.node.internal")
    for i in range(count):
        assert answers(ask(answerer, f"flood-{i:05d}")) == [
            f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        ]
        assert len(answerer.table.cache) <= MAX_CACHED
    for i in range(2000):
        ask(answerer, f"nope-{i}.node.internal")
    assert not any(key.startswith(b"\x04nope") for key in answerer.table.cache)
    assert len(answerer.table.cache) <= MAX_CACHED
    again = ask(answerer, "flood-00000.node.internal")
    assert again.answer == first.answer


@pytest.mark.parametrize("adopt", [False, True])
def test_a_cached_reply_is_replaced_when_its_node_changes(adopt: bool) -> None:
    """worker-0 asked (its reply cached), then readdressed: the next answer has the new
    address, by FQDN, bare name and PTR, whether the update copies the previous table (built
    in a thread) or takes it over (on the loop)."""
    old = Answerer.for_records(RECORDS, ZONE, serial=SERIAL)
    for name in ("worker-0", "worker-0.node.internal"):
        assert answers(ask(old, name)) == ["10.240.0.101"]
    assert ptr_targets(ask(old, "101.0.240.10.in-addr.arpa", "PTR")) == ["worker-0.node.internal."]
    moved = node_host("worker-0", "10.240.0.201")
    hosts = tuple(moved if h.canonical == "worker-0.node.internal" else h for h in RECORDS.hosts)
    after = RecordSet(hosts)
    removed = tuple(h for h in RECORDS.hosts if h.canonical == "worker-0.node.internal")
    changes = HostChanges(before=RECORDS, after=after, removed=removed, added=(moved,))
    new = Answerer.for_records(
        after, ZONE, serial=SERIAL + 1, previous=old, changes=changes, adopt=adopt
    )
    assert new.table.built_from_previous
    for name in ("worker-0", "worker-0.node.internal"):
        assert answers(ask(new, name)) == ["10.240.0.201"]
    # The old address is nobody's any more: its reverse name is not ours.
    assert ask(new, "101.0.240.10.in-addr.arpa", "PTR").rcode() == dns.rcode.REFUSED
    assert ptr_targets(ask(new, "201.0.240.10.in-addr.arpa", "PTR")) == ["worker-0.node.internal."]


def test_only_the_exact_reverse_name_of_a_published_address_is_answered(
    answerer: Answerer,
) -> None:
    """Reverse names are read back into addresses when asked (the table keeps no list of
    them): spellings that denote the same address but are not its reverse name (leading
    zeros, IPv6 nibbles run together) are not ours; mixed case is the same name."""
    assert ptr_targets(ask(answerer, "101.0.240.10.IN-ADDR.arpa", "PTR")) == [
        "worker-0.node.internal."
    ]
    v6 = dns.reversename.from_address("fd00:10:240::102").to_text()
    assert ptr_targets(ask(answerer, v6.upper(), "PTR")) == ["worker-1.node.internal."]
    labels = v6.split(".")
    run_together = ".".join([labels[1] + labels[0], *labels[2:]])
    for name in ("101.0.240.010.in-addr.arpa", "0101.0.240.10.in-addr.arpa", run_together):
        assert ask(answerer, name, "PTR").rcode() == dns.rcode.REFUSED, name
