"""What the zone answers, and the replies asked lately, encoded: built from a RecordSet, or
updated from the table it replaces by changing only what changed.

Contract:

- `AnswerTable.build(records, zone, serial=...)` takes in everything; `AnswerTable.update(
  previous, records, serial=...)` starts from `previous` and changes only the names and reverse
  names of hosts that were added, removed or changed (dropping their cached replies), plus the
  apex (whose SOA has the new serial):
  about a millisecond after one Node changed at 5000 Nodes instead of a full build. It returns
  None when that cannot give exactly what a full build gives (record sets that are not strictly
  sorted, repeat a name across hosts, publish a name that cannot be encoded or touch the apex or
  the nameserver's name); `AnswerTable.replacing` is "update, else build reusing the previous
  table's encoded replies". The result is byte for byte what a full build gives (tested).
- Either returns a complete table or nothing, and nothing changes when it returns nothing:
  whether the update can be exact is checked before anything is changed, and the work happens
  in a private builder. A table is never changed after it is returned, but for its `cache`
  (filled by `lookup` on the thread that answers) and one exception:
  `update(..., adopt=True)` with `changes` that lead from `previous`'s records takes over
  `previous`'s dicts and changes them in place (a copy is O(all names), ~2 ms at 5000 nodes,
  the bulk of a change). When that update succeeds, `previous` must not answer again and no
  later update starts from it. `DnsService` swaps it out at once, on the loop thread, so no
  query sees a table half-changed. Without `adopt`, `previous` is only read (a worker thread
  may build while the loop answers from it).
- Records None means "not loaded yet": the table is empty and names in the zone get SERVFAIL.

Memory: a table keeps per name only what it needs to encode a reply (name -> host, reverse
name -> PTR target, which names exist), not the replies: encoding every reply up front cost
~3.2 KB per host (most of the daemon's memory at 20,000 Nodes). `lookup(question)` encodes a
reply on first use into `cache`, which the hot path reads; the cache holds at most
`MAX_CACHED` replies (a flood of distinct names cannot grow it) and is carried over by an
update minus the questions of the names that changed (O(change)). `cache` maps the question as
it appears on the wire (lower-cased name, type, class) to an `Entry`: for each EDNS mode, the
header variants and the bytes that follow the question. `answers` gives every reply at once
(for tests and inspection).
"""

from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from nodehosts.core.dns.wire import (
    A_IN,
    AAAA_IN,
    ANY_IN,
    ARPA,
    CLASS_IN,
    NOERROR,
    NXDOMAIN,
    OPT_HEAD,
    PTR_IN,
    QNAME_POINTER,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_NS,
    TYPE_PTR,
    TYPE_SOA,
    BadName,
    encode_name,
    in_zone,
    name_to_wire,
    reverse_address,
    reverse_name,
    rr,
)
from nodehosts.core.dns.zone import ZoneConfig
from nodehosts.core.model import Host, HostChanges, IPAddress, RecordSet

T = TypeVar("T")
# Encoded replies kept per table: the QPS harness asks 2000 questions (1000 names, FQDN and
# bare); ~0.7 KB each, so ~3 MB at most. When full, the oldest quarter goes (insertion order).
MAX_CACHED = 4096
_EVICT = MAX_CACHED // 4
_ANY_ORDER = (TYPE_A, TYPE_AAAA, TYPE_PTR, TYPE_SOA, TYPE_NS)


# Variant and Entry are made by the thousand per build and never changed after: slots for
# the hot path's attribute loads, not frozen (a frozen dataclass's __init__ is ~3x slower).
@dataclass(slots=True)
class Variant:
    """One reply under one EDNS mode, without the ID (2 bytes) and the question it echoes."""

    # Flags and counts (10 bytes), indexed by RD | CD << 1 | RA << 2.
    heads: tuple[bytes, ...]
    # What follows the question: the records, then the OPT record in EDNS modes.
    rest: bytes
    size: int  # len(rest), kept to spare the hot path a call
    # The same two for the truncated (TC) reply: no records but the OPT.
    tc_heads: tuple[bytes, ...]
    tc_rest: bytes


@dataclass(slots=True)
class Entry:
    """The reply to one question, in each EDNS mode, and its RCODE (for counting)."""

    # Indexed by the EDNS mode: 0 no EDNS, 1 EDNS without DO, 2 EDNS with DO.
    variants: tuple[Variant, Variant, Variant]
    rcode: int


_HeadKey: TypeAlias = tuple[bool, bool, int, int, int, int]  # AA, TC, RCODE, AN/NS/ARCOUNT
# Header variants by key, kept across builds: every update encodes the apex and negative
# answers again (new serial), and their headers are always the same few. Looked up inline
# (a dict, not an lru_cache: cheaper per call); at most _MAX_HEADS keys are kept.
_HEADS: dict[_HeadKey, tuple[bytes, ...]] = {}
_MAX_HEADS = 1024


def _header_variants(key: _HeadKey) -> tuple[bytes, ...]:
    """The 8 headers (flags + counts, 10 bytes each), indexed by RD | CD << 1 | RA << 2."""
    aa, tc, rcode, an, ns, ar = key
    counts = struct.pack(">HHHH", 1, an, ns, ar)
    first = 0x80 | (0x04 if aa else 0) | (0x02 if tc else 0)
    found = tuple(
        bytes((first | (i & 1), (0x80 if i & 4 else 0) | (0x10 if i & 2 else 0) | rcode)) + counts
        for i in range(8)
    )
    if len(_HEADS) < _MAX_HEADS:
        _HEADS[key] = found
    return found


class _Encoder:
    """Builds `Entry` values. `entry` shares equal ones (the merged names' and the negative
    replies, encoded with every table); `addresses` and `ptr` encode afresh (on a cache miss).

    `reuse` is the previous build's memo: equal inputs give equal entries, so most of a rebuild
    is dict lookups. Only what the new build uses is carried over (`memo`), so the memo never
    grows, and the previous generation's entries are not kept alive by the new table.
    """

    def __init__(self, max_udp_payload: int, reuse: Mapping[object, object] | None = None) -> None:
        self._opts = (
            b"",
            OPT_HEAD + struct.pack(">HBBHH", max_udp_payload, 0, 0, 0, 0),
            OPT_HEAD + struct.pack(">HBBHH", max_udp_payload, 0, 0, 0x8000, 0),
        )
        self.memo: dict[object, object] = {}
        self._reuse = reuse or {}

    def cached(self, key: object, build: Callable[..., T], *args: Any) -> T:
        """`build(*args)`, or what it gave for `key` in this build or the previous one."""
        found = self.memo.get(key)
        if found is None:
            found = self._reuse.get(key)
            if found is None:
                found = build(*args)
            self.memo[key] = found
        return found  # type: ignore[return-value]  # the memo holds what `build` gave for `key`

    def done(self) -> None:
        """Let go of the previous build's memo (the table keeps this encoder for lookups)."""
        self._reuse = {}

    def entry(
        self,
        rcode: int,
        *,
        aa: bool = True,
        answer: tuple[bytes, ...] = (),
        authority: tuple[bytes, ...] = (),
        additional: tuple[bytes, ...] = (),
    ) -> Entry:
        key = ("entry", rcode, aa, answer, authority, additional)
        return self.cached(key, self._entry, rcode, aa, answer, authority, additional)

    def _entry(
        self,
        rcode: int,
        aa: bool,
        answer: tuple[bytes, ...],
        authority: tuple[bytes, ...],
        additional: tuple[bytes, ...],
    ) -> Entry:
        body = b"".join(answer) + b"".join(authority) + b"".join(additional)
        an, ns, ar = len(answer), len(authority), len(additional)
        known = _HEADS
        variants: list[Variant] = []
        for mode, opt in enumerate(self._opts):
            rest = body + opt
            edns = 1 if mode else 0
            key = (aa, False, rcode, an, ns, ar + edns)
            heads = known.get(key) or _header_variants(key)
            tc_key = (aa, True, rcode, 0, 0, edns)
            tc_heads = known.get(tc_key) or _header_variants(tc_key)
            variants.append(Variant(heads, rest, len(rest), tc_heads, opt))
        return Entry((variants[0], variants[1], variants[2]), rcode)

    def addresses(self, ttl: int, addresses: tuple[IPAddress, ...], rtype: int) -> Entry | None:
        """The A (or AAAA) reply of a host's addresses; None if it has none of that family.
        Not memoized: `AnswerTable.lookup` calls it once per cached question."""
        version = 4 if rtype == TYPE_A else 6
        answer = tuple(
            rr(QNAME_POINTER, rtype, ttl, a.packed) for a in addresses if a.version == version
        )
        if not answer:
            return None
        return self._entry(NOERROR, True, answer, (), ())

    def ptr(self, ttl: int, target: bytes) -> Entry:
        """The PTR reply to a reverse name (not memoized, like `addresses`)."""
        return self._entry(NOERROR, True, (rr(QNAME_POINTER, TYPE_PTR, ttl, target),), (), ())


class AnswerTable:
    """The pre-encoded replies of one RecordSet under one zone and serial (see the module
    docstring). Made only by `build`, `update` and `replacing`."""

    __slots__ = (
        "_below",
        "_claims",
        "_encoder",
        "_fixed",
        "_incremental",
        "_memo",
        "_merged_extra",
        "_merged_owners",
        "_name_count",
        "_names",
        "_records",
        "apex",
        "built_from_previous",
        "cache",
        "loaded",
        "nodata",
        "nxdomain",
        "serial",
        "skipped_names",
        "zone",
    )

    zone: ZoneConfig
    serial: int
    loaded: bool  # records were given (None: not loaded yet)
    apex: bytes  # the zone's name in wire form
    # question (lower-cased name + type + class, as on the wire) -> its reply, for the
    # questions asked lately (at most MAX_CACHED); `lookup` fills it
    cache: dict[bytes, Entry]
    # A name exists (NODATA for other types, not NXDOMAIN) when it is published (`_names`,
    # `_reverse`, `_merged_owners`) or something published is below it (`_below`).
    # name -> how many published names, reverse names and merged names are strictly below it
    # (between them and the apex): empty for flat node names, so a host costs no entry here
    _below: dict[bytes, int]
    _merged_owners: frozenset[bytes]  # the apex and the nameserver's name, when they exist
    _name_count: int  # how many names exist, kept per update (O(change), not a union)
    nodata: Entry
    # NXDOMAIN for names in the zone, SERVFAIL before the first load
    nxdomain: Entry
    # Published names that could not be encoded (and so are not answered).
    skipped_names: tuple[str, ...]
    # Made by `update` (re-encoding only what changed), not by a full build?
    built_from_previous: bool
    # What a later update needs to start from this table:
    _records: RecordSet | None
    _names: dict[bytes, Host]  # published name (not a merged one) -> its host
    # (A reverse name exists when it is the reverse name of an address in `_claims` whose
    # first host's canonical name can be encoded: that name is its PTR. Read from the name
    # when asked, so a host costs no reverse-name key: ~80 bytes.)
    # the replies of the merged names (apex, nameserver): few, encoded with the table
    _fixed: dict[bytes, Entry]
    _encoder: _Encoder  # encodes what `lookup` misses (not through the memo: bounded)
    # address -> the host listing it, or the hosts in record order when several do (the
    # first gets the PTR); a lone host saves a list per address (~90 bytes). The lists are
    # shared with later tables: replaced, never changed in place
    _claims: dict[IPAddress, Host | list[Host]]
    # (owner, type, rdata) the hosts add to merged names, in record order
    _merged_extra: tuple[tuple[bytes, int, bytes], ...]
    # Can a later update start from this table? Only for sorted records with unique, valid
    # names (anything else is rare and takes a full build).
    _incremental: bool
    _memo: dict[object, object]  # the encoder's memo, for the next build to reuse

    def lookup(self, question: bytes) -> Entry | None:
        """The positive reply to `question` (lower-cased name + type + class), encoded now if
        it is not in `cache`, and kept there; None if there is none (NODATA or not ours).

        Gives what a table with every reply encoded up front gave. Negative replies are not
        cached (random names would evict the hot ones)."""
        entry = self._fixed.get(question)
        if entry is None:
            entry = self._encode(question)
            if entry is None:
                return None
        cache = self.cache
        if len(cache) >= MAX_CACHED:
            for key in list(itertools.islice(cache, _EVICT)):
                del cache[key]
        cache[question] = entry
        return entry

    def _encode(self, question: bytes) -> Entry | None:
        owner, type_class = question[:-4], question[-4:]
        ttl = self.zone.ttl
        if type_class in (PTR_IN, ANY_IN):
            target = _ptr_target(self._claims, owner)
            if target is not None:  # on a name that is also published, ANY gives the PTR
                return self._encoder.ptr(ttl, target)
            if type_class == PTR_IN:
                return None
        host = self._names.get(owner)
        if host is None:
            return None
        if type_class == A_IN:
            return self._encoder.addresses(ttl, host.addresses, TYPE_A)
        if type_class == AAAA_IN:
            return self._encoder.addresses(ttl, host.addresses, TYPE_AAAA)
        if type_class == ANY_IN:  # RFC 8482: one RRset, A before AAAA
            return self._encoder.addresses(ttl, host.addresses, TYPE_A) or self._encoder.addresses(
                ttl, host.addresses, TYPE_AAAA
            )
        return None

    @property
    def answers(self) -> dict[bytes, Entry]:
        """Every positive reply, encoded now (O(all names): for tests and inspection, not the
        hot path; `cache` is not changed)."""
        out: dict[bytes, Entry] = {}
        for owner in self._names:
            for type_class in (A_IN, AAAA_IN, ANY_IN):
                entry = self._encode(owner + type_class)
                if entry is not None:
                    out[owner + type_class] = entry
        for owner in self._reverse_names():
            for type_class in (PTR_IN, ANY_IN):
                entry = self._encode(owner + type_class)
                if entry is not None:
                    out[owner + type_class] = entry
        out.update(self._fixed)
        return out

    @property
    def name_count(self) -> int:
        """How many names exist (answered NOERROR): published, reverse, apex, in between."""
        return self._name_count

    def exists(self, name: bytes) -> bool:
        """Does the (lower-cased, wire) name exist: NODATA rather than NXDOMAIN?"""
        return (
            name in self._names
            or name in self._below
            or name in self._merged_owners
            or (name.endswith(ARPA) and _ptr_target(self._claims, name) is not None)
        )

    def _reverse_names(self) -> list[bytes]:
        """Every reverse name that exists (O(all addresses))."""
        claims = self._claims
        owners = (reverse_name(address) for address in claims)
        return [owner for owner in owners if _ptr_target(claims, owner) is not None]

    @property
    def existing(self) -> dict[bytes, int]:
        """Every name that exists -> how many published, reverse and merged names are at or
        below it (O(all names): for tests and inspection)."""
        out: dict[bytes, int] = dict.fromkeys(self._below.keys() | self._merged_owners, 0)
        out.update(self._below)
        for owners in (self._names, self._reverse_names(), self._merged_owners):
            for owner in owners:
                out[owner] = out.get(owner, 0) + 1
        return out

    @classmethod
    def build(
        cls,
        records: RecordSet | None,
        zone: ZoneConfig,
        *,
        serial: int,
        reuse: AnswerTable | None = None,
    ) -> AnswerTable:
        """Encode every reply of `records`; `reuse` (a previous table) lends its encoded
        replies, so that equal RRsets are not encoded again."""
        memo = None
        if reuse is not None and reuse.zone.max_udp_payload == zone.max_udp_payload:
            memo = reuse._memo
        builder = _Builder(zone, serial, memo)
        if records is None:
            return builder.finish(None, incremental=False, built_from_previous=False)
        return builder.load(records)

    @classmethod
    def update(
        cls,
        previous: AnswerTable,
        records: RecordSet,
        *,
        serial: int,
        changes: HostChanges | None = None,
        adopt: bool = False,
    ) -> AnswerTable | None:
        """`records` encoded by changing a copy of `previous` (or, with `adopt`, `previous`
        itself) where hosts changed; None if that cannot give exactly what `build` gives.

        The changed hosts are `changes` when it leads from `previous`'s records to `records`
        (no walk over every host), else found by comparing both record sets.
        """
        if not previous._incremental or previous._records is None:
            return None
        builder = _Builder(previous.zone, serial, previous._memo)
        return builder.update(previous, previous._records, records, changes, adopt=adopt)

    @classmethod
    def replacing(
        cls,
        previous: AnswerTable | None,
        records: RecordSet | None,
        zone: ZoneConfig,
        *,
        serial: int,
        changes: HostChanges | None = None,
        adopt: bool = False,
    ) -> AnswerTable:
        """The table that replaces `previous`: `update` when it can (same zone), else `build`
        reusing `previous`'s encoded replies."""
        if previous is not None and records is not None and previous.zone == zone:
            table = cls.update(previous, records, serial=serial, changes=changes, adopt=adopt)
            if table is not None:
                return table
        return cls.build(records, zone, serial=serial, reuse=previous)


class _Builder:
    """The tables of one AnswerTable while they are made; dropped if the making fails."""

    def __init__(self, zone: ZoneConfig, serial: int, memo: Mapping[object, object] | None) -> None:
        self.zone = zone
        self.serial = serial
        self.apex = apex = name_to_wire(zone.domain)
        nameserver = name_to_wire(zone.nameserver)
        # Names whose records come from several places (SOA, NS, glue, hosts): the apex and the
        # nameserver's name when it is inside the zone.
        self.merged_names = frozenset({apex, nameserver} if in_zone(nameserver, apex) else {apex})
        self.encoder = _Encoder(zone.max_udp_payload, memo)
        self.fixed: dict[bytes, Entry] = {}
        self.cache: dict[bytes, Entry] = {}
        self.reverse: list[bytes] = []  # a full build's reverse names, to count them once
        self.below: dict[bytes, int] = {}
        self.merged_owners: frozenset[bytes] = frozenset()
        self.names: dict[bytes, Host] = {}
        self.claims: dict[IPAddress, Host | list[Host]] = {}
        self.merged_extra: tuple[tuple[bytes, int, bytes], ...] = ()
        self.skipped: tuple[str, ...] = ()

    def finish(
        self,
        records: RecordSet | None,
        *,
        incremental: bool,
        built_from_previous: bool,
        name_count: int | None = None,
    ) -> AnswerTable:
        zone, encoder = self.zone, self.encoder
        negative_soa = rr(
            self.apex, TYPE_SOA, zone.negative_ttl, self._soa_rdata(zone.negative_ttl)
        )
        table = object.__new__(AnswerTable)
        table.zone = zone
        table.serial = self.serial
        table.loaded = records is not None
        table.apex = self.apex
        # The merged names' replies (new serial) replace any cached ones.
        self.cache.update(self.fixed)
        table.cache = self.cache
        table._fixed = self.fixed
        table._encoder = encoder
        table._below = self.below
        table._merged_owners = self.merged_owners
        if name_count is None:  # a full build: count them once
            name_count = len(
                self.names.keys() | set(self.reverse) | self.below.keys() | self.merged_owners
            )
        table._name_count = name_count
        table.nodata = encoder.entry(NOERROR, authority=(negative_soa,))
        if records is None:
            table.nxdomain = encoder.entry(SERVFAIL, aa=False)
        else:
            table.nxdomain = encoder.entry(NXDOMAIN, authority=(negative_soa,))
        table.skipped_names = self.skipped
        table.built_from_previous = built_from_previous
        table._records = records
        table._names = self.names
        table._claims = self.claims
        table._merged_extra = self.merged_extra
        table._incremental = incremental
        table._memo = encoder.memo
        encoder.done()
        return table

    def _soa_rdata(self, minimum: int) -> bytes:
        zone = self.zone
        return (
            name_to_wire(zone.nameserver)
            + name_to_wire(zone.hostmaster)
            + struct.pack(">IIIII", self.serial, zone.refresh, zone.retry, zone.expire, minimum)
        )

    def load(self, records: RecordSet) -> AnswerTable:
        """Build everything from `records` (the first build, or one that cannot reuse)."""
        merged_names = self.merged_names
        names, claims, reverse = self.names, self.claims, self.reverse
        skipped: list[str] = []
        extra: list[tuple[bytes, int, bytes]] = []
        incremental = True
        last = ""
        for host in records.hosts:
            if not host.names or host.names[0] <= last:
                incremental = False  # not strictly sorted by canonical name
            else:
                last = host.names[0]
            canonical: bytes | None = None  # the PTR target of the addresses it claims first
            for index, name in enumerate(host.names):
                try:
                    owner = encode_name(name)
                except BadName:
                    skipped.append(name)
                    continue
                if index == 0:
                    canonical = owner
                if owner in merged_names:
                    for address in host.addresses:
                        rtype = TYPE_A if address.version == 4 else TYPE_AAAA
                        extra.append((owner, rtype, address.packed))
                    continue
                if owner in names:
                    incremental = False  # a name of two hosts: the last one's types win
                names[owner] = host
                self._exist(owner, 1)
            for address in host.addresses:
                held = claims.get(address)
                if held is None:  # the first host to list it: its PTR
                    claims[address] = host
                    if canonical is not None:
                        owner = reverse_name(address)
                        if owner in merged_names:
                            incremental = False
                        self._exist(owner, 1)
                        reverse.append(owner)
                elif isinstance(held, list):
                    held.append(host)  # this build's own list: nobody else holds it yet
                else:
                    claims[address] = [held, host]

        self.merged_extra = tuple(extra)
        self._put_merged(count=True)
        self.skipped = tuple(skipped)
        return self.finish(
            records, incremental=incremental and not skipped, built_from_previous=False
        )

    def update(
        self,
        previous: AnswerTable,
        before: RecordSet,
        records: RecordSet,
        changes: HostChanges | None,
        *,
        adopt: bool,
    ) -> AnswerTable | None:
        """`AnswerTable.update`'s work: re-encode only the names and addresses of hosts that
        changed between `before` (`previous`'s records) and `records`."""
        removed: Sequence[Host]
        added: Sequence[Host]
        if changes is not None and changes.before is before and changes.after is records:
            removed, added = changes.removed, changes.added
            adopted = adopt
        else:
            adopted = False
            found = _changed_hosts(before.hosts, records.hosts)
            if found is None:
                return None
            removed, added = found
        reverse = self._exact(previous._names, removed, added)
        if reverse is None:
            return None
        # From here on nothing can fail: `previous` is changed (adopted) only when it succeeds.
        # The names whose existence may change, to keep the count of names in O(change).
        touched: set[bytes] = set()
        for hosts in (removed, added):
            for host in hosts:
                for name in host.names:
                    touched.add(encode_name(name))
        touched.update(reverse.values())  # every address of a changed host
        for owner in list(touched):
            touched.update(self._parents(owner))
        existed = sum(map(previous.exists, touched))
        claimed = {address: address in previous._claims for address in reverse}
        if adopted:
            previous._incremental = False
            self.cache = cache = previous.cache
            self.below = previous._below
            self.names = names = previous._names
            self.claims = claims = previous._claims
        else:
            # The copy of the cache is bounded (MAX_CACHED); the loop may add to the original
            # meanwhile (dict.copy holds the GIL: it sees a whole dict).
            self.cache = cache = previous.cache.copy()
            self.below = previous._below.copy()
            self.names = names = previous._names.copy()
            self.claims = claims = previous._claims.copy()
        self.merged_extra = previous._merged_extra
        dirty_owners: dict[bytes, None] = {}
        for host in removed:
            for name in host.names:
                owner = encode_name(name)
                del names[owner]
                self._exist(owner, -1)
                dirty_owners[owner] = None
            for address in host.addresses:
                _set_claims(
                    claims, address, [o for o in _claimants(claims[address]) if o is not host]
                )
        for host in added:
            for name in host.names:
                owner = encode_name(name)
                names[owner] = host
                self._exist(owner, 1)
                dirty_owners[owner] = None
            for address in host.addresses:
                held = claims.get(address)
                if held is None:
                    claims[address] = host
                else:
                    _set_claims(
                        claims,
                        address,
                        sorted((*_claimants(held), host), key=lambda other: other.names[0]),
                    )

        # Every address of a changed host: its reverse name exists while a host claims it
        # (every name of an incremental table can be encoded).
        for address, owner in reverse.items():
            has = address in claims
            if has != claimed[address]:
                self._exist(owner, 1 if has else -1)
            dirty_owners[owner] = None

        # What was cached for a changed name is encoded again when it is next asked.
        for owner in dirty_owners:
            for type_class in (A_IN, AAAA_IN, ANY_IN, PTR_IN):
                cache.pop(owner + type_class, None)

        self._put_merged(count=False)  # the SOA carries the new serial
        exists = self._exists
        name_count = previous._name_count - existed + sum(map(exists, touched))
        return self.finish(
            records, incremental=True, built_from_previous=True, name_count=name_count
        )

    def _exists(self, name: bytes) -> bool:
        """`AnswerTable.exists` on the tables being made."""
        return (
            name in self.names
            or name in self.below
            or name in self.merged_owners
            or (name.endswith(ARPA) and _ptr_target(self.claims, name) is not None)
        )

    def _exact(
        self, names: Mapping[bytes, Host], removed: Sequence[Host], added: Sequence[Host]
    ) -> dict[IPAddress, bytes] | None:
        """Can `update` give exactly what `load` gives for these changes? Checked before
        anything is changed, so that a None from `update` leaves everything as it was.
        If so, the reverse name of every address of the changed hosts (they need a new PTR).

        Not when a removed host does not own its names in `names`, an added name cannot be
        encoded or is taken (by a host that stays, or twice), or a name or reverse name is
        the apex's or the nameserver's (merged from several places: a full build)."""
        merged_names = self.merged_names
        gone: set[bytes] = set()
        for host in removed:
            for name in host.names:
                owner = encode_name(name)  # the previous table had no unencodable names
                if owner in merged_names or owner in gone or names.get(owner) is not host:
                    return None
                gone.add(owner)
        taken: set[bytes] = set()
        for host in added:
            for name in host.names:
                try:
                    owner = encode_name(name)
                except BadName:
                    return None
                if (
                    owner in merged_names
                    or owner in taken
                    or (owner in names and owner not in gone)
                ):
                    return None
                taken.add(owner)
        reverse: dict[IPAddress, bytes] = {}
        for hosts in (removed, added):
            for host in hosts:
                for address in host.addresses:
                    if address not in reverse:
                        owner = reverse[address] = reverse_name(address)
                        if owner in merged_names:
                            return None
        return reverse

    def _put_merged(self, *, count: bool) -> None:
        """The apex and the nameserver's name: SOA, NS, glue, hosts' addresses, merged."""
        zone, apex, encoder, answers = self.zone, self.apex, self.encoder, self.fixed
        ttl = zone.ttl
        nameserver = name_to_wire(zone.nameserver)
        merged: dict[bytes, dict[int, list[bytes]]] = {
            apex: {TYPE_SOA: [self._soa_rdata(zone.negative_ttl)], TYPE_NS: [nameserver]}
        }
        if nameserver != apex and nameserver in self.merged_names:
            merged[nameserver] = {}
        for owner, rtype, rdata in self.merged_extra:
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
        self.merged_owners = frozenset(merged)
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

    def _exist(self, owner: bytes, delta: int) -> None:
        """Count `owner` in (+1) or out (-1) of the names between it and the apex.

        Those names exist (NODATA, not NXDOMAIN: RFC 8020) while anything below them does;
        `owner` itself exists while it is published (the caller's dicts say so).
        """
        below = self.below
        for parent in self._parents(owner):
            count = below.get(parent, 0) + delta
            if count:
                below[parent] = count
            else:
                del below[parent]

    def _parents(self, owner: bytes) -> list[bytes]:
        """The names strictly between `owner` and the apex; none if it is not in the zone."""
        apex = self.apex
        cut = len(owner) - len(apex)
        if cut <= 0 or not owner.endswith(apex):
            return []
        parents: list[bytes] = []
        at = owner[0] + 1
        while at < cut:
            parents.append(owner[at:])
            at += owner[at] + 1
        return parents if at == cut else []


def _ptr_target(claims: Mapping[IPAddress, Host | list[Host]], name: bytes) -> bytes | None:
    """The PTR target of a reverse name (lower-cased, wire): the canonical name of the first
    host claiming its address; None if it is no published address's reverse name."""
    address = reverse_address(name)
    if address is None:
        return None
    held = claims.get(address)
    if held is None:
        return None
    first = held if isinstance(held, Host) else held[0]
    try:
        return encode_name(first.canonical)
    except BadName:
        return None


def _claimants(held: Host | list[Host]) -> list[Host]:
    return [held] if isinstance(held, Host) else held


def _set_claims(
    claims: dict[IPAddress, Host | list[Host]], address: IPAddress, hosts: list[Host]
) -> None:
    """Store the hosts claiming `address` in the compact form (see `AnswerTable._claims`)."""
    if not hosts:
        del claims[address]
    elif len(hosts) == 1:
        claims[address] = hosts[0]
    else:
        claims[address] = hosts


def _changed_hosts(
    old: Sequence[Host], new: Sequence[Host]
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
