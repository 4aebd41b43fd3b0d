"""DNS query bytes + published records -> reply bytes, or "forward this upstream". No I/O.

Contract of `Answerer(records, zone, serial=...).handle(query, *, transport, recursion_allowed)`:

- Returns the reply bytes, a `Forward` (the query belongs upstream; `Forward.failure` is the
  SERVFAIL to send if no upstream answers) or None (send nothing). It never raises.
- The zone `zone.domain` is ours, authoritatively (AA): SOA and NS at the apex, A/AAAA for every
  published name inside it, NODATA (NOERROR, no answer) for other types on a name that exists
  (published names and the empty non-terminals above them), NXDOMAIN below it otherwise.
  NXDOMAIN and NODATA carry the SOA in the authority section with TTL and MINIMUM both
  `zone.negative_ttl` (RFC 2308).
- Published names outside the zone are ours too: the bare single-label node names (`worker-0`)
  and static names. They answer A/AAAA, and NODATA with the zone's SOA for other types (never
  forwarded: that would leak internal names upstream). A single-label name that is not published
  is not ours.
- PTR: exactly one record, the host's canonical name, for every published address (node and
  static hosts); other types on those reverse names are NODATA. Other reverse names are not ours.
- Not ours: `Forward` when `recursion_allowed` (the caller decides: an upstream exists and the
  client is in an allowed network), else REFUSED. Classes other than IN, AXFR and IXFR are
  REFUSED and never forwarded. RA is set on every reply exactly when `recursion_allowed`.
- Names match case-insensitively; the question is echoed byte for byte as sent (0x20 case).
- EDNS0: a query with an OPT record (version 0) gets an OPT back (our payload size, the DO bit
  copied); other versions get BADVERS. Over UDP a reply larger than the client's payload size
  (512 without EDNS, at most `zone.max_udp_payload`) is replaced by an empty one with TC set.
- ANY gets one RRset (RFC 8482): A, else AAAA, else PTR, else the apex SOA.
- Opcodes other than QUERY: NOTIMP. Responses (QR set) and anything shorter than a header: None.
  Unparsable queries: FORMERR. More than one question or OPT record, or a name longer than
  255 bytes: FORMERR (never forwarded).
- Records None means "not loaded yet": names in the zone get SERVFAIL (not a negative answer a
  resolver would cache), everything else is handled as above.

Speed: every reply the zone can give is encoded once, when the Answerer is built, keyed by the
question as it appears on the wire (lower-cased name, type, class). The hot path checks the
header, finds the end of the name, parses an optional OPT record by hand, does one dict lookup
and splices the query's ID and question bytes in front of the cached rest. Everything else
(compressed names, other opcodes, forwards, errors) takes the slow path through dnslib.

Updates: built with `previous=` (the Answerer it replaces), an Answerer copies the previous
one's tables and re-encodes only the names and reverse names of hosts that were added, removed
or changed, plus the apex (whose SOA has the new serial), so an update after one Node changed
costs about a millisecond for 5000 Nodes instead of a full build. The result is exactly what a
full build gives (tested against one, byte for byte); record sets that are not strictly sorted,
repeat a name across hosts, publish a name that cannot be encoded or touch the apex or the
nameserver's name take the full build. The previous Answerer is never changed.
"""

from __future__ import annotations

import operator
import struct
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import dnslib

from nodehosts.core.dns.wire import (
    A_IN,
    AAAA_IN,
    ANY_IN,
    BADVERS,
    CLASS_IN,
    CLASS_IN_WIRE,
    EDNS_V0,
    FORMERR,
    LONGEST_QUESTION_END,
    MAX_MESSAGE,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    OPT_HEAD,
    PTR_IN,
    QNAME_POINTER,
    QUESTION_ONE,
    RCODE_NAMES,
    REFUSED,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_NS,
    TYPE_OPT,
    TYPE_PTR,
    TYPE_SOA,
    ZONE_TRANSFERS,
    BadName,
    Reply,
    Transport,
    in_zone,
    name_to_wire,
    reverse_wire,
    rr,
)
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import Host, HostChanges, IPAddress, RecordSet

T = TypeVar("T")
_ANY_ORDER = (TYPE_A, TYPE_AAAA, TYPE_PTR, TYPE_SOA, TYPE_NS)
# Replies per RCODE name: the header RCODEs and BADVERS.
_RCODE_LABELS = {**RCODE_NAMES, BADVERS: "BADVERS"}

# One way to answer a question under one EDNS mode:
# (8 header variants indexed by RD | CD<<1 | RA<<2 (flags + counts, 10 bytes each),
#  the bytes after the question, their length,
#  the same two for the truncated (TC) reply).
_Variant: TypeAlias = tuple[tuple[bytes, ...], bytes, int, tuple[bytes, ...], bytes]
# The variants for no EDNS, EDNS without DO, EDNS with DO; then the RCODE, for counting.
_Entry: TypeAlias = tuple[_Variant, _Variant, _Variant, int]


@dataclass(frozen=True, slots=True)
class Forward:
    """The query is not ours: send `query` upstream; `failure` is the reply if none answers."""

    query: bytes
    failure: Reply
    transport: Transport
    # The question's type, to count the reply under when it comes back.
    qtype: int


class AnswerCounts:
    """Counters bumped by `Answerer.handle`; shared across rebuilds so they only grow."""

    __slots__ = ("dropped", "errors", "forwarded", "replies", "slow")

    def __init__(self) -> None:
        # (QTYPE as its two wire bytes, or b"" without a question; RCODE) -> replies sent.
        self.replies: defaultdict[tuple[bytes, int], int] = defaultdict(int)
        self.slow = 0  # queries that missed the pre-encoded path and went through dnslib
        self.forwarded = 0  # handed out as `Forward`: the caller counts the reply it sends
        self.dropped = 0  # queries answered with silence (responses, runts)
        self.errors = 0  # bugs: an exception inside handle(), answered SERVFAIL

    def count(self, qtype: int, rcode: int) -> None:
        """Count a reply made elsewhere (a forwarded query's)."""
        self.replies[(qtype.to_bytes(2, "big"), rcode)] += 1

    def by_type_and_rcode(self) -> dict[tuple[int, int], int]:
        """(QTYPE, RCODE) as numbers -> replies; QTYPE 0 for replies without a question."""
        out: dict[tuple[int, int], int] = defaultdict(int)
        for (qtype, rcode), count in list(self.replies.items()):
            out[(int.from_bytes(qtype, "big"), rcode)] += count
        return dict(out)

    def by_qtype(self) -> dict[str, int]:
        """Replies per query type name (A, AAAA, TYPE65534, ...)."""
        out: dict[str, int] = defaultdict(int)
        for (qtype, _), count in self.replies.items():
            out[str(dnslib.QTYPE[int.from_bytes(qtype, "big")]) if qtype else "NONE"] += count
        return dict(out)

    def by_rcode(self) -> dict[str, int]:
        """Replies per RCODE name (NOERROR, NXDOMAIN, ...)."""
        out: dict[str, int] = defaultdict(int)
        for (_, rcode), count in self.replies.items():
            out[_RCODE_LABELS.get(rcode, f"RCODE{rcode}")] += count
        return dict(out)


class _Encoder:
    """Builds `_Entry` values, sharing equal pieces (one entry per distinct RRset).

    `reuse` is the previous build's memo: equal inputs give equal entries, so most of a rebuild
    is dict lookups. Only what the new build uses is carried over, so the memo never grows.
    """

    def __init__(self, max_udp_payload: int, reuse: Mapping[object, object] | None = None) -> None:
        self._opts = (
            b"",
            OPT_HEAD + struct.pack(">HBBHH", max_udp_payload, 0, 0, 0, 0),
            OPT_HEAD + struct.pack(">HBBHH", max_udp_payload, 0, 0, 0x8000, 0),
        )
        self._heads: dict[tuple[bool, bool, int, int, int, int], tuple[bytes, ...]] = {}
        self.memo: dict[object, object] = {}
        self._reuse = reuse or {}

    def release_previous(self) -> None:
        """The build is complete: let go of the previous build's memo, which otherwise kept
        the previous generation's entries and keys alive as long as this one lives."""
        self._reuse = {}

    def cached(self, key: object, build: Callable[..., T], *args: Any) -> T:
        """`build(*args)`, or what it gave for `key` in this build or the previous one."""
        found = self.memo.get(key)
        if found is None:
            found = self._reuse.get(key)
            if found is None:
                found = build(*args)
            self.memo[key] = found
        return found  # type: ignore[return-value]

    def heads(
        self, *, aa: bool, tc: bool, rcode: int, an: int, ns: int, ar: int
    ) -> tuple[bytes, ...]:
        key = (aa, tc, rcode, an, ns, ar)
        found = self._heads.get(key)
        if found is None:
            counts = struct.pack(">HHHH", 1, an, ns, ar)
            first = 0x80 | (0x04 if aa else 0) | (0x02 if tc else 0)
            found = tuple(
                bytes((first | (i & 1), (0x80 if i & 4 else 0) | (0x10 if i & 2 else 0) | rcode))
                + counts
                for i in range(8)
            )
            self._heads[key] = found
        return found

    def entry(
        self,
        rcode: int,
        *,
        aa: bool = True,
        answer: tuple[bytes, ...] = (),
        authority: tuple[bytes, ...] = (),
        additional: tuple[bytes, ...] = (),
    ) -> _Entry:
        key = ("entry", rcode, aa, answer, authority, additional)
        return self.cached(key, self._entry, rcode, aa, answer, authority, additional)

    def _entry(
        self,
        rcode: int,
        aa: bool,
        answer: tuple[bytes, ...],
        authority: tuple[bytes, ...],
        additional: tuple[bytes, ...],
    ) -> _Entry:
        body = b"".join(answer) + b"".join(authority) + b"".join(additional)
        variants: list[_Variant] = []
        for mode, opt in enumerate(self._opts):
            rest = body + opt
            ar = len(additional) + (1 if mode else 0)
            heads = self.heads(
                aa=aa, tc=False, rcode=rcode, an=len(answer), ns=len(authority), ar=ar
            )
            tc_heads = self.heads(aa=aa, tc=True, rcode=rcode, an=0, ns=0, ar=1 if mode else 0)
            variants.append((heads, rest, len(rest), tc_heads, opt))
        return (variants[0], variants[1], variants[2], rcode)


class Answerer:
    """Answers queries from one RecordSet; build a new one when the records change.

    `previous` (the Answerer being replaced) makes the build start from it: only what changed
    is re-encoded (`built_from_previous`), or, when that cannot be done exactly, a full build
    reuses its encoded replies.
    """

    def __init__(
        self,
        records: RecordSet | None,
        zone: ZoneConfig,
        *,
        serial: int,
        counts: AnswerCounts | None = None,
        previous: Answerer | None = None,
        changes: HostChanges | None = None,
        adopt: bool = False,
    ) -> None:
        self.zone = zone
        self.serial = serial
        self.counts = counts if counts is not None else AnswerCounts()
        self.loaded = records is not None
        # Published names that could not be encoded (and so are not answered).
        self.skipped_names: tuple[str, ...] = ()
        self._apex = name_to_wire(zone.domain)
        self._max_udp = zone.max_udp_payload
        nameserver = name_to_wire(zone.nameserver)
        # Names whose records come from several places (SOA, NS, glue, hosts): the apex and the
        # nameserver's name when it is inside the zone.
        self._merged_names = frozenset(
            {self._apex, nameserver} if in_zone(nameserver, self._apex) else {self._apex}
        )
        reuse = None
        if previous is not None and previous.zone.max_udp_payload == zone.max_udp_payload:
            reuse = previous._encoder.memo
        self._encoder = encoder = _Encoder(zone.max_udp_payload, reuse)
        # question (lower-cased name + type + class, as on the wire) -> entry
        self._answers: dict[bytes, _Entry] = {}
        # name -> how many published names, reverse names and merged names are at or below it,
        # for every name that exists (incl. empty non-terminals); they answer NODATA
        self._existing: dict[bytes, int] = {}
        # What a later build needs to start from this one instead of from scratch:
        self._records = records
        # published name (not a merged one) -> its host
        self._names: dict[bytes, Host] = {}
        # address -> the hosts listing it, in record order (the first gets the PTR). The lists
        # are shared with later builds: replaced, never changed in place.
        self._claims: dict[IPAddress, list[Host]] = {}
        # (owner, type, rdata) the hosts add to merged names, in record order
        self._merged_extra: tuple[tuple[bytes, int, bytes], ...] = ()
        # Can a later build start from this one? Only for sorted records with unique, valid
        # names (anything else is rare and takes a full build).
        self._incremental = False
        # Was this one built from `previous` by re-encoding only what changed?
        self.built_from_previous = False
        negative_soa = rr(
            self._apex, TYPE_SOA, zone.negative_ttl, self._soa_rdata(zone.negative_ttl)
        )
        self._nodata = encoder.entry(NOERROR, authority=(negative_soa,))
        if records is None:
            self._nxdomain = encoder.entry(SERVFAIL, aa=False)
        else:
            self._nxdomain = encoder.entry(NXDOMAIN, authority=(negative_soa,))
            if not (
                previous is not None
                and previous._incremental
                and previous.zone == zone
                and self._update(previous, records, changes, adopt=adopt)
            ):
                self._answers, self._existing = {}, {}
                self._names, self._claims = {}, {}
                self._load(records)
        encoder.release_previous()

    @property
    def name_count(self) -> int:
        """How many names exist (answered NOERROR): published, reverse, apex, in between."""
        return len(self._existing)

    # --- building

    def _soa_rdata(self, minimum: int) -> bytes:
        zone = self.zone
        return (
            name_to_wire(zone.nameserver)
            + name_to_wire(zone.hostmaster)
            + struct.pack(">IIIII", self.serial, zone.refresh, zone.retry, zone.expire, minimum)
        )

    def _load(self, records: RecordSet) -> None:
        """Build everything from `records` (the first build, or one that cannot reuse)."""
        ttl, encoder, merged_names = self.zone.ttl, self._encoder, self._merged_names
        answers, names, claims = self._answers, self._names, self._claims
        skipped: list[str] = []
        extra: list[tuple[bytes, int, bytes]] = []
        incremental = True
        last = ""
        for host in records.hosts:
            if not host.names or host.names[0] <= last:
                incremental = False  # not strictly sorted by canonical name
            else:
                last = host.names[0]
            by_type = encoder.cached(
                ("host", ttl, host.addresses), self._address_entries, host.addresses
            )
            for name in host.names:
                try:
                    owner = name_to_wire(name)
                except BadName:
                    skipped.append(name)
                    continue
                if owner in merged_names:
                    for address in host.addresses:
                        rtype = TYPE_A if address.version == 4 else TYPE_AAAA
                        extra.append((owner, rtype, address.packed))
                    continue
                if owner in names:
                    incremental = False  # a name of two hosts: the last one's types win
                names[owner] = host
                self._exist(owner, 1)
                for type_class, entry in by_type:
                    answers[owner + type_class] = entry
            for address in host.addresses:
                claims.setdefault(address, []).append(host)

        for address, hosts in claims.items():
            try:
                target = name_to_wire(hosts[0].canonical)
            except BadName:
                continue
            owner = reverse_wire(address)
            if owner in merged_names:
                incremental = False
            entry = encoder.entry(NOERROR, answer=(rr(QNAME_POINTER, TYPE_PTR, ttl, target),))
            self._exist(owner, 1)
            answers[owner + PTR_IN] = answers[owner + ANY_IN] = entry

        self._merged_extra = tuple(extra)
        self._put_merged(count=True)
        self.skipped_names = tuple(skipped)
        self._incremental = incremental and not skipped

    def _update(
        self, previous: Answerer, records: RecordSet, changes: HostChanges | None, *, adopt: bool
    ) -> bool:
        """Start from `previous`: re-encode only the names and addresses of hosts that changed.

        The changed hosts are `changes` when it leads from `previous`'s records to `records`
        (no walk over every host), else found by comparing both record sets.
        False (and this Answerer half-built) when that cannot give what `_load` would: the
        caller then builds from scratch. `previous` is never changed, except with `adopt` and
        such `changes`: then its tables are taken over and changed in place instead of copied
        (a copy is O(all names), ~2 ms at 5000 nodes, the bulk of a change), and `previous`
        must not answer again; no later build starts from it. `DnsService` swaps it out at
        once, on the loop thread, so no query sees a table half-changed.
        """
        if changes is not None and changes.before is previous._records and changes.after is records:
            removed, added = changes.removed, changes.added
            adopted = adopt
        else:
            adopted = False
            found = _changed_hosts(previous._records.hosts, records.hosts)  # type: ignore[union-attr]
            if found is None:
                return False
            removed, added = found
        ttl, encoder, merged_names = self.zone.ttl, self._encoder, self._merged_names
        if adopted:
            previous._incremental = False
            self._answers = answers = previous._answers
            self._existing = previous._existing
            self._names = names = previous._names
            self._claims = claims = previous._claims
        else:
            self._answers = answers = previous._answers.copy()
            self._existing = previous._existing.copy()
            self._names = names = previous._names.copy()
            self._claims = claims = previous._claims.copy()
        self._merged_extra = previous._merged_extra
        dirty_owners: dict[bytes, None] = {}
        dirty_addresses: dict[IPAddress, None] = {}
        for host in removed:
            for name in host.names:
                owner = name_to_wire(name)  # previous had no skipped names
                if owner in merged_names or names.get(owner) is not host:
                    return False
                del names[owner]
                self._exist(owner, -1)
                dirty_owners[owner] = None
            for address in host.addresses:
                left = [other for other in claims[address] if other is not host]
                if left:
                    claims[address] = left
                else:
                    del claims[address]
                dirty_addresses[address] = None
        for host in added:
            for name in host.names:
                try:
                    owner = name_to_wire(name)
                except BadName:
                    return False
                if owner in merged_names or owner in names:
                    return False
                names[owner] = host
                self._exist(owner, 1)
                dirty_owners[owner] = None
            for address in host.addresses:
                claims[address] = sorted(
                    (*claims.get(address, ()), host), key=lambda other: other.names[0]
                )
                dirty_addresses[address] = None

        for address in dirty_addresses:
            owner = reverse_wire(address)
            if owner in merged_names:
                return False
            key = owner + PTR_IN
            had = key in answers
            hosts = claims.get(address)
            if hosts:
                target = name_to_wire(hosts[0].canonical)  # every name was encoded above
                answers[key] = encoder.entry(
                    NOERROR, answer=(rr(QNAME_POINTER, TYPE_PTR, ttl, target),)
                )
                if not had:
                    self._exist(owner, 1)
            elif had:
                del answers[key]
                self._exist(owner, -1)
            dirty_owners[owner] = None

        # Each changed name gets exactly what `_load` gives it: its host's A/AAAA/ANY, then
        # (a reverse name that is also published) the PTR as ANY.
        for owner in dirty_owners:
            for type_class in (A_IN, AAAA_IN, ANY_IN):
                answers.pop(owner + type_class, None)
            host = names.get(owner)
            if host is not None:
                by_type = encoder.cached(
                    ("host", ttl, host.addresses), self._address_entries, host.addresses
                )
                for type_class, entry in by_type:
                    answers[owner + type_class] = entry
            ptr = answers.get(owner + PTR_IN)
            if ptr is not None:
                answers[owner + ANY_IN] = ptr

        self._put_merged(count=False)  # the SOA carries the new serial
        self._incremental = self.built_from_previous = True
        return True

    def _put_merged(self, *, count: bool) -> None:
        """The apex and the nameserver's name: SOA, NS, glue, hosts' addresses, merged."""
        zone, apex, encoder, answers = self.zone, self._apex, self._encoder, self._answers
        ttl = zone.ttl
        nameserver = name_to_wire(zone.nameserver)
        merged: dict[bytes, dict[int, list[bytes]]] = {
            apex: {TYPE_SOA: [self._soa_rdata(zone.negative_ttl)], TYPE_NS: [nameserver]}
        }
        if nameserver != apex and nameserver in self._merged_names:
            merged[nameserver] = {}
        for owner, rtype, rdata in self._merged_extra:
            merged[owner].setdefault(rtype, []).append(rdata)

        glue_types = merged.get(nameserver)
        if glue_types is not None and not glue_types:
            for address in zone.nameserver_addresses:
                rtype = TYPE_A if address.version == 4 else TYPE_AAAA
                glue_types.setdefault(rtype, []).append(address.packed)
            if not glue_types:
                del merged[nameserver]  # neither published nor configured: it does not exist
        glue = tuple(
            rr(nameserver, rtype, ttl, rdata)
            for rtype in (TYPE_A, TYPE_AAAA)
            for rdata in (glue_types or {}).get(rtype, ())
        )
        for owner, types in merged.items():
            if count:
                self._exist(owner, 1)
            for rtype, rdatas in types.items():
                answer = tuple(rr(QNAME_POINTER, rtype, ttl, rdata) for rdata in rdatas)
                additional = glue if rtype == TYPE_NS else ()
                answers[owner + struct.pack(">HH", rtype, CLASS_IN)] = encoder.entry(
                    NOERROR, answer=answer, additional=additional
                )
            any_type = next(t for t in _ANY_ORDER if t in types)
            answers[owner + ANY_IN] = answers[owner + struct.pack(">HH", any_type, CLASS_IN)]

    def _address_entries(
        self, addresses: tuple[IPAddress, ...]
    ) -> tuple[tuple[bytes, _Entry], ...]:
        """(type + class on the wire, entry) for A, AAAA and ANY of a host's addresses."""
        ttl, encoder = self.zone.ttl, self._encoder
        out: list[tuple[bytes, _Entry]] = []
        for rtype, type_class in ((TYPE_A, A_IN), (TYPE_AAAA, AAAA_IN)):
            rdatas = [a.packed for a in addresses if (a.version == 4) == (rtype == TYPE_A)]
            if rdatas:
                answer = tuple(rr(QNAME_POINTER, rtype, ttl, rdata) for rdata in rdatas)
                out.append((type_class, encoder.entry(NOERROR, answer=answer)))
        if out:
            out.append((ANY_IN, out[0][1]))  # RFC 8482: one RRset, A before AAAA
        return tuple(out)

    def _exist(self, owner: bytes, delta: int) -> None:
        """Count `owner` and the names between it and the apex in (+1) or out (-1).

        Those names exist (NODATA, not NXDOMAIN: RFC 8020) while anything at or below them does.
        """
        existing = self._existing
        count = existing.get(owner, 0) + delta
        if count:
            existing[owner] = count
        else:
            del existing[owner]
        cut = len(owner) - len(self._apex)
        if cut <= 0 or not owner.endswith(self._apex):
            return
        parents: list[int] = []
        at = owner[0] + 1
        while at < cut:
            parents.append(at)
            at += owner[at] + 1
        if at == cut:
            for start in parents:
                parent = owner[start:]
                count = existing.get(parent, 0) + delta
                if count:
                    existing[parent] = count
                else:
                    del existing[parent]

    # --- answering

    def handle(
        self, query: bytes, *, transport: Transport, recursion_allowed: bool
    ) -> Reply | Forward | None:
        """The reply to one query (see the module docstring); never raises."""
        try:
            n = len(query)
            # Fast path: one question, no answer/authority, at most one additional (OPT),
            # QR=0 and OPCODE=QUERY. The name ends at the first zero byte: a dict hit proves
            # the labels walk to exactly that byte, because the key's own labels do.
            if n > 16 and query[4:11] == QUESTION_ONE and not query[2] & 0xF8:
                end = query.find(0, 12) + 5
                if 16 < end <= LONGEST_QUESTION_END:
                    ar = query[11]
                    if ar == 0 and n == end:
                        mode, limit = 0, 512
                    elif (
                        ar == 1
                        and n >= end + 11
                        and query[end : end + 3] == OPT_HEAD
                        and query[end + 5 : end + 7] == EDNS_V0
                        and (query[end + 9] << 8 | query[end + 10]) == n - end - 11
                    ):
                        mode = 2 if query[end + 7] & 0x80 else 1
                        limit = query[end + 3] << 8 | query[end + 4]
                        if limit < 512:
                            limit = 512
                        elif limit > self._max_udp:
                            limit = self._max_udp
                    else:
                        mode = -1
                    if mode >= 0:
                        question = query[12:end]
                        # Lower-casing type and class too is safe: no key has a type or
                        # class byte in A-Z, so a changed byte only turns a miss into a miss.
                        key = question.lower()
                        entry = self._answers.get(key)
                        if entry is None:
                            entry = self._miss(key[:-4], question[-4:])
                        if entry is not None:
                            variant = entry[mode]
                            if transport != "udp":
                                limit = MAX_MESSAGE
                            index = (
                                (query[2] & 1)
                                | ((query[3] & 0x10) >> 3)
                                | (4 if recursion_allowed else 0)
                            )
                            self.counts.replies[(question[-4:-2], entry[3])] += 1
                            if end + variant[2] > limit:
                                return query[:2] + variant[3][index] + question + variant[4]
                            return query[:2] + variant[0][index] + question + variant[1]
            return self._slow(query, transport, recursion_allowed)
        except Exception:  # a bug of ours: answer SERVFAIL rather than nothing
            self.counts.errors += 1
            if len(query) < 12:
                return None
            return query[:2] + bytes((0x80 | (query[2] & 0x79), SERVFAIL)) + bytes(8)

    def _miss(self, name: bytes, type_class: bytes) -> _Entry | None:
        """NODATA or NXDOMAIN for a question with no positive answer; None if not ours."""
        if type_class[2:] != CLASS_IN_WIRE or type_class[:2] in ZONE_TRANSFERS:
            return None
        if name in self._existing:
            return self._nodata
        if in_zone(name, self._apex):
            return self._nxdomain
        return None

    def _slow(
        self, query: bytes, transport: Transport, recursion_allowed: bool
    ) -> Reply | Forward | None:
        counts = self.counts
        counts.slow += 1
        if len(query) < 12 or query[2] & 0x80:
            # Too short to carry an ID, or a response: answering could start a loop.
            counts.dropped += 1
            return None
        opcode = (query[2] >> 3) & 0x0F
        try:
            record = dnslib.DNSRecord.parse(query)
        except Exception:  # dnslib raises many types on malformed input; all are the peer's fault
            return self._error(query, NOTIMP if opcode else FORMERR, ra=recursion_allowed)
        question = _question_bytes(query, record)
        opts = [rr for rr in record.ar if rr.rtype == TYPE_OPT]
        edns_do: int | None = None
        if len(opts) == 1 and not opts[0].rname.label:
            edns_do = opts[0].ttl & 0x8000
        if opcode:
            return self._error(
                query, NOTIMP, question=question, edns_do=edns_do, ra=recursion_allowed
            )
        if question is None or len(opts) > 1 or (opts and edns_do is None):
            return self._error(query, FORMERR, ra=recursion_allowed)
        mode, limit = 0, 512
        if edns_do is not None:
            if (opts[0].ttl >> 16) & 0xFF:
                return self._error(
                    query, BADVERS, question=question, edns_do=edns_do, ra=recursion_allowed
                )
            mode = 2 if edns_do else 1
            limit = min(max(opts[0].rclass, 512), self._max_udp)
        if transport != "udp":
            limit = MAX_MESSAGE
        type_class = question[-4:]
        name = question[:-4].lower()
        entry = self._answers.get(name + type_class) or self._miss(name, type_class)
        if entry is not None:
            variant = entry[mode]
            index = (query[2] & 1) | ((query[3] & 0x10) >> 3) | (4 if recursion_allowed else 0)
            counts.replies[(type_class[:2], entry[3])] += 1
            if 12 + len(question) + variant[2] > limit:
                return query[:2] + variant[3][index] + question + variant[4]
            return query[:2] + variant[0][index] + question + variant[1]
        if (
            recursion_allowed
            and type_class[2:] == CLASS_IN_WIRE
            and type_class[:2] not in ZONE_TRANSFERS
        ):
            counts.forwarded += 1
            failure = self._error(
                query, SERVFAIL, question=question, edns_do=edns_do, ra=True, count=False
            )
            return Forward(
                query=query,
                failure=failure,
                transport=transport,
                qtype=type_class[0] << 8 | type_class[1],
            )
        return self._error(query, REFUSED, question=question, edns_do=edns_do, ra=recursion_allowed)

    def _error(
        self,
        query: bytes,
        rcode: int,
        *,
        question: bytes | None = None,
        edns_do: int | None = None,
        ra: bool,
        count: bool = True,
    ) -> Reply:
        """A reply without records: header (ID, OPCODE, RD, CD copied), question, OPT."""
        first = 0x80 | (query[2] & 0x79)
        second = (0x80 if ra else 0) | (query[3] & 0x10) | (rcode & 0x0F)
        opt = b""
        if edns_do is not None:
            # The upper 8 bits of an extended RCODE (BADVERS) travel in the OPT record.
            opt = OPT_HEAD + struct.pack(">HBBHH", self._max_udp, rcode >> 4, 0, edns_do, 0)
        head = bytes((first, second)) + struct.pack(
            ">HHHH", 1 if question else 0, 0, 0, 1 if opt else 0
        )
        if count:
            self.counts.replies[(question[-4:-2] if question else b"", rcode)] += 1
        return query[:2] + head + (question or b"") + opt


def _changed_hosts(
    old: tuple[Host, ...], new: tuple[Host, ...]
) -> tuple[list[Host], list[Host]] | None:
    """(hosts only in `old`, hosts only in `new`), both sorted by canonical name; None if `new`
    is not strictly sorted by canonical name (`old` must be)."""
    canonical = [host.names[0] for host in new if host.names]
    if len(canonical) != len(new) or any(map(operator.ge, canonical, canonical[1:])):
        return None
    removed: list[Host] = []
    added: list[Host] = []
    i = j = 0
    n_old, n_new = len(old), len(new)
    while i < n_old and j < n_new:
        a, b = old[i], new[j]
        if a is b or a == b:
            i += 1
            j += 1
            continue
        name_a, name_b = a.names[0], canonical[j]
        if name_a <= name_b:
            removed.append(a)
            i += 1
        if name_b <= name_a:
            added.append(b)
            j += 1
    removed.extend(old[i:])
    added.extend(new[j:])
    return removed, added


def _question_bytes(query: bytes, record: dnslib.DNSRecord) -> bytes | None:
    """The one question as sent (or re-encoded, uncompressed, if it used a pointer)."""
    if len(record.questions) != 1:
        return None
    at, n = 12, len(query)
    while at < n:
        length = query[at]
        if length == 0:
            end = at + 5
            # A name longer than 255 bytes (RFC 1035 2.3.4) is malformed: FORMERR.
            return query[12:end] if end <= min(n, LONGEST_QUESTION_END) else None
        if length > 63:
            break  # a compression pointer: rebuild the name from dnslib's labels
        at += length + 1
    q = record.questions[0]
    labels: tuple[bytes, ...] = q.qname.label
    if any(not 0 < len(label) < 64 for label in labels):
        return None
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    if len(wire) > 255:
        return None
    return wire + struct.pack(">HH", q.qtype, q.qclass)


def rcode_of(reply: Reply) -> int:
    """The (4-bit header) RCODE of a reply."""
    return reply[3] & 0x0F
