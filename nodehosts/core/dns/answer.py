"""DNS query bytes + published records -> reply bytes, or "forward this upstream". No I/O.

Contract of `Answerer(table).handle(query, *, transport, recursion_allowed)`, where `table` is
the `AnswerTable` (nodehosts.core.dns.table) of the published records (`Answerer.for_records(
records, zone, serial=..., previous=...)` makes the table and the Answerer in one call):

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

Speed: every reply the zone gives is encoded once, when it is first asked (the table keeps a
bounded cache of them, see nodehosts.core.dns.table), keyed by the question as it appears on
the wire (lower-cased name, type, class). The hot path checks the header, finds the end of the
name, parses an optional OPT record by hand, does one dict lookup and splices the query's ID
and question bytes in front of the cached rest. Everything else
(compressed names, other opcodes, forwards, errors) takes the slow path through dnslib.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass

import dnslib

from nodehosts.core.dns.table import AnswerTable, Entry
from nodehosts.core.dns.wire import (
    BADVERS,
    CLASS_IN_WIRE,
    EDNS_V0,
    FORMERR,
    LONGEST_QUESTION_END,
    MAX_MESSAGE,
    NOTIMP,
    OPT_HEAD,
    QUESTION_ONE,
    RCODE_NAMES,
    REFUSED,
    SERVFAIL,
    TYPE_OPT,
    ZONE_TRANSFERS,
    Reply,
    Transport,
    in_zone,
    plain_question,
)
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import HostChanges, RecordSet

# Replies per RCODE name: the header RCODEs and BADVERS.
_RCODE_LABELS = {**RCODE_NAMES, BADVERS: "BADVERS"}


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


class Answerer:
    """Answers queries from one AnswerTable; make a new one when the records change."""

    __slots__ = (
        "_answers",
        "_apex",
        "_exists",
        "_lookup",
        "_max_udp",
        "_nodata",
        "_nxdomain",
        "counts",
        "table",
    )

    def __init__(self, table: AnswerTable, counts: AnswerCounts | None = None) -> None:
        self.table = table
        self.counts = counts if counts is not None else AnswerCounts()
        # The table's parts the hot path reads, one attribute load each.
        self._answers = table.cache
        self._lookup = table.lookup
        self._exists = table.exists
        self._nodata = table.nodata
        self._nxdomain = table.nxdomain
        self._apex = table.apex
        self._max_udp = table.zone.max_udp_payload

    @classmethod
    def for_records(
        cls,
        records: RecordSet | None,
        zone: ZoneConfig,
        *,
        serial: int,
        counts: AnswerCounts | None = None,
        previous: Answerer | None = None,
        changes: HostChanges | None = None,
        adopt: bool = False,
    ) -> Answerer:
        """An Answerer for `records`, its table updated from `previous`'s when that can be
        done exactly, else built (`AnswerTable.replacing`; `adopt` as in `AnswerTable.update`:
        `previous` must not answer again)."""
        table = AnswerTable.replacing(
            previous.table if previous is not None else None,
            records,
            zone,
            serial=serial,
            changes=changes,
            adopt=adopt,
        )
        return cls(table, counts)

    # --- answering

    def handle(
        self, query: bytes, *, transport: Transport, recursion_allowed: bool
    ) -> Reply | Forward | None:
        """The reply to one query (see the module docstring); never raises."""
        try:
            n = len(query)
            # Fast path: one question, no answer/authority, at most one additional (OPT),
            # QR=0 and OPCODE=QUERY. The name ends at the first zero byte: a dict hit proves
            # the labels walk to exactly that byte, because the key's own labels do (so a hit
            # sees what wire.plain_question would give, without walking the labels).
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
                            entry = self._miss(key, question[-4:])
                        if entry is not None:
                            variant = entry.variants[mode]
                            if transport != "udp":
                                limit = MAX_MESSAGE
                            index = (
                                (query[2] & 1)
                                | ((query[3] & 0x10) >> 3)
                                | (4 if recursion_allowed else 0)
                            )
                            self.counts.replies[(question[-4:-2], entry.rcode)] += 1
                            if end + variant.size > limit:
                                return (
                                    query[:2] + variant.tc_heads[index] + question + variant.tc_rest
                                )
                            return query[:2] + variant.heads[index] + question + variant.rest
            return self._slow(query, transport, recursion_allowed)
        except Exception:  # a bug of ours: answer SERVFAIL rather than nothing
            self.counts.errors += 1
            if len(query) < 12:
                return None
            return query[:2] + bytes((0x80 | (query[2] & 0x79), SERVFAIL)) + bytes(8)

    def _miss(self, key: bytes, type_class: bytes) -> Entry | None:
        """For a question (`key`: lower-cased, `type_class` as sent) whose reply is not cached:
        the positive reply (encoded now and cached), else NODATA or NXDOMAIN; None if not
        ours. Only a name that exists can have a positive reply, so a question for a name
        that does not costs no more than before replies were cached on demand."""
        name = key[:-4]
        exists = self._exists(name)
        if exists:
            entry = self._lookup(key)
            if entry is not None:
                return entry
        if type_class[2:] != CLASS_IN_WIRE or type_class[:2] in ZONE_TRANSFERS:
            return None
        if exists:
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
        question = _question(query, record)
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
        key = name + type_class
        entry = self._answers.get(key) or self._miss(key, type_class)
        if entry is not None:
            variant = entry.variants[mode]
            index = (query[2] & 1) | ((query[3] & 0x10) >> 3) | (4 if recursion_allowed else 0)
            counts.replies[(type_class[:2], entry.rcode)] += 1
            if 12 + len(question) + variant.size > limit:
                return query[:2] + variant.tc_heads[index] + question + variant.tc_rest
            return query[:2] + variant.heads[index] + question + variant.rest
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


def _question(query: bytes, record: dnslib.DNSRecord) -> bytes | None:
    """The one question as sent, or re-encoded (uncompressed) from dnslib's reading of it if
    its name used a compression pointer; None if there is not exactly one or it is too long."""
    if len(record.questions) != 1:
        return None
    question = plain_question(query)
    if question is not None:
        return question
    q = record.questions[0]
    labels: tuple[bytes, ...] = q.qname.label
    if any(not 0 < len(label) < 64 for label in labels):
        return None
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    if len(wire) > 255:  # RFC 1035 2.3.4: FORMERR
        return None
    return wire + struct.pack(">HH", q.qtype, q.qclass)
