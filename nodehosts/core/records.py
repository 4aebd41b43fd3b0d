"""The record policy: nodes and static hosts -> what is published, and why.

Contract: `build_publication` is a pure function of its inputs (no I/O, no clock); equal inputs
in any order give an equal `Publication`. It is O(n log n) and memoises the pure per-node work
(keyed by the immutable NodeInfo and policy), address parsing and name validation in bounded
LRU caches. The caches hold about 1.5 KB per node (~7 MB for 5000 nodes) and are sized for 5000
nodes plus churn; a bigger cluster stays correct, it only loses the speed-up.
`RecordIndex` is what the daemon runs on every change: the same result (a property test
checks it against `build_publication` over random change sequences), kept up to date per
changed node, with the hosts that changed (`HostChanges`) for the sinks.

Names. A node's names are its metadata.name plus its first `Hostname` address when that differs.
Everything is lower-cased (ASCII only: a non-ASCII name is invalid, never folded). A name without
a dot is published as `<name>.<domain>` (first: the canonical name) and bare; with an empty domain
bare only. A name with a dot is published as given. Names must be RFC 1123 host names (labels of
1-63 characters from a-z, 0-9 and '-', not starting or ending with '-', at most 253 in all; no
trailing dot). A node with an invalid metadata.name is skipped; an invalid Hostname only drops
the alias. Static hosts (from `nodehosts.core.hosts.parse_hosts`, which keeps names as written)
get the same domain expansion here, so the parser needs no policy; a static `x.<domain>` (x one
label) also gets bare `x`, so a Node named x cannot take the half the admin did not write.

Addresses. Only the policy's address types are looked at. Per IP family independently, the
first type in the policy's order with a usable address of that family gives all of its usable
addresses of that family. Not usable, and reported in the node's decision (never dropped
silently): unparsable text, a %zone id, IPv4-mapped IPv6 (consumers would serve it as A) and
anything else in ::/16 (IPv4-compatible/-translated, nothing assignable), unspecified, loopback,
multicast and broadcast addresses. A node left without a usable address is skipped.

Trust. Nothing a Node reports about itself proves ownership (its kubelet writes its status, and
with TLS bootstrapping anyone holding the bootstrap token can register any name), so a node may
only publish what nobody else has and the admin did not reserve. A dotted node name or Hostname
is published only strictly under the domain or one of `allowed_suffixes` (label-aligned:
`evilnode.internal` is not under `node.internal`). Never a node's: the zone apex (the domain),
its NS name, `localhost` and anything under it, anything under (or equal to) a
`reserved_suffixes` entry (default cluster.local), a static host's name or a static host's
address. A refused metadata.name skips the node; a refused Hostname only drops the alias; a
static host's address is dropped from the node (a node left with none is skipped). Each refusal
is in the node's decision, saying which setting would allow it. Static hosts are the admin's
and are not checked against these rules.

Collisions. Every published name belongs to at most one host. Claims rank: static host names,
then names derived from a node's metadata.name, then names derived from a Hostname alias; ties go
to the lexically smaller owner (the node's name; for a static host its canonical name), except
that a name only Hostname aliases claim goes to nobody when two or more nodes claim it (whoever
got it, the others could not tell it from a take-over). A node skipped by the policy (not ready,
cordoned, no usable address) still claims its names and Hostname at their ranks and publishes
nothing, so no other node takes them meanwhile. The loser drops only the colliding name; a host
left with no names is not published. Each collision is one `Collision` (owners labelled by node
name, static hosts as ``static:<canonical>``; winner None when nobody gets it) and a note in each
losing published node's decision.

Label selection. With a label selector the daemon publishes from the selected Nodes only, but
a Node outside the selection is still a Node of the cluster, and whoever registers a selected
Node could otherwise take its name as a Hostname alias (or as a dotted name). So the Nodes
outside the selection (`hidden`: name -> Hostname) rank exactly as skipped nodes do: they
publish nothing and hold their names and Hostname at their ranks; a selected node loses such a
name, and its decision says to which node outside the label selector. Their collisions are
reported (owner ``hidden:<name>``) only when a selected node or a static host is in them. The
CSR approver's cluster view applies the same rule to certificates (`nodehosts.core.csr`).
"""

from __future__ import annotations

import ipaddress
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Final, NamedTuple

from nodehosts.core.chunks import SortedChunks
from nodehosts.core.model import (
    Collision,
    Host,
    HostChanges,
    IPAddress,
    NodeDecision,
    NodeInfo,
    Publication,
    RecordSet,
    SkipReason,
)
from nodehosts.core.names import domain_problem, fold, is_under, name_problem

# Claim ranks: lower wins a name. The admin's static file beats every node.
_RANK_STATIC: Final = 0
_RANK_NODE: Final = 1
_RANK_ALIAS: Final = 2

# RFC 6761: localhost and everything under it is the host itself, never a node.
_LOCALHOST: Final = "localhost"
DEFAULT_RESERVED_SUFFIXES: Final = ("cluster.local",)


@dataclass(frozen=True)
class RecordPolicy:
    """What to publish: the domain, the preferred address types, and which nodes to leave out.

    The domain is normalised (lower-cased, one trailing dot removed) and validated; invalid
    settings raise `ValueError` at construction, so a config error shows before any record.
    """

    domain: str = "node.internal"
    address_types: tuple[str, ...] = ("InternalIP", "ExternalIP")
    exclude_not_ready: bool = False
    exclude_unschedulable: bool = False
    # Suffixes besides the domain under which a dotted node name may be published.
    allowed_suffixes: tuple[str, ...] = ()
    # No node name may equal or lie under these (the cluster's own DNS domain).
    reserved_suffixes: tuple[str, ...] = DEFAULT_RESERVED_SUFFIXES
    # The zone's NS name (dns.nameserver); "" means ns.<domain>. Never a node's.
    nameserver: str = ""
    # Hashed once in __post_init__: every memoised per-node call hashes the policy.
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = (self.domain, self.address_types, self.allowed_suffixes, self.reserved_suffixes)
        try:
            normal = _normalised(*raw, self.nameserver)
        except TypeError:  # an unhashable setting: validate it uncached (it raises there)
            normal = _normalised.__wrapped__(*raw, self.nameserver)
        domain, types, allowed, reserved, nameserver = normal
        # Frozen: normalise through object.__setattr__ (the documented dataclass idiom).
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "address_types", types)
        object.__setattr__(self, "allowed_suffixes", allowed)
        object.__setattr__(self, "reserved_suffixes", reserved)
        object.__setattr__(self, "nameserver", nameserver)
        flags = (self.exclude_not_ready, self.exclude_unschedulable)
        object.__setattr__(
            self, "_hash", hash((domain, types, flags, allowed, reserved, nameserver))
        )

    def __hash__(self) -> int:
        return self._hash


# The daemon builds a RecordPolicy from its settings for every publication: validating the
# same settings again each time cost ~20-50 us per change.
@lru_cache(maxsize=32)
def _normalised(
    domain: str,
    address_types: Iterable[str],
    allowed_suffixes: Iterable[str],
    reserved_suffixes: Iterable[str],
    nameserver: str,
) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], str]:
    """RecordPolicy's settings normalised and validated (ValueError says which is wrong)."""
    folded = fold(domain).removesuffix(".")
    if folded and (problem := domain_problem(folded)) is not None:
        raise ValueError(f"invalid domain {domain!r}: {problem}")
    types = tuple(address_types)
    if not types or not all(isinstance(kind, str) and kind for kind in types):
        raise ValueError(f"address_types must be non-empty type names, not {types!r}")
    allowed = _suffixes("allowed suffix", allowed_suffixes)
    reserved = _suffixes("reserved suffix", reserved_suffixes)
    ns = nameserver.lower().removesuffix(".") if nameserver else ""
    if ns and name_problem(ns) is not None:
        raise ValueError(f"invalid nameserver {nameserver!r}: {name_problem(ns)}")
    return folded, types, allowed, reserved, ns or (f"ns.{folded}" if folded else "")


def _suffixes(what: str, values: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, without a trailing dot, each a valid name; order kept, duplicates dropped."""
    out: list[str] = []
    for value in values:
        suffix = value.lower().removesuffix(".") if isinstance(value, str) else value
        problem = name_problem(suffix) if isinstance(suffix, str) else "not a string"
        if problem is not None:
            raise ValueError(f"invalid {what} {value!r}: {problem}")
        if suffix not in out:
            out.append(suffix)
    return tuple(out)


@lru_cache(maxsize=16384)
def refusal(name: str, policy: RecordPolicy) -> str | None:
    """Why a node may not publish the valid lower-case `name` (before domain expansion)."""
    for form in expand_name(name, policy.domain):
        if form == _LOCALHOST or is_under(form, _LOCALHOST):
            return f"{form!r} is reserved (localhost)"
        if form == policy.domain:
            return f"{form!r} is the zone apex (records.domain)"
        if form == policy.nameserver:
            return f"{form!r} is the zone's NS name (dns.nameserver)"
        for suffix in policy.reserved_suffixes:
            if form == suffix or is_under(form, suffix):
                return (
                    f"{form!r} is under the reserved suffix {suffix!r} (records.reserved_suffixes)"
                )
    if "." in name and not any(
        is_under(name, suffix) for suffix in (policy.domain, *policy.allowed_suffixes) if suffix
    ):
        allowed = [s for s in (policy.domain, *policy.allowed_suffixes) if s]
        parent = name.partition(".")[2]
        return (
            f"{name!r} is outside the allowed suffixes {allowed}; to publish it, add"
            f" {parent!r} to records.allowed_suffixes (--allowed-suffix {parent})"
        )
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why a parsed address must not be published, or None if it is usable."""
    # Integer tests: ipaddress's is_* properties build networks per call and dominate a cold build.
    value = int(address)
    if address.version == 4:
        if value == 0:
            return "is the unspecified address"
        if value >> 24 == 127:
            return "is a loopback address"
        if value >> 28 == 0xE:
            return "is a multicast address"
        if value == 0xFFFFFFFF:
            return "is the broadcast address"
        return None
    assert isinstance(address, ipaddress.IPv6Address)
    if address.scope_id is not None:
        return "has a zone id"
    if value >> 112 == 0:  # ::/16: nothing assignable
        if value == 0:
            return "is the unspecified address"
        if value == 1:
            return "is a loopback address"
        if value >> 32 == 0xFFFF:
            return "is an IPv4-mapped IPv6 address"
        return "is in ::/16 (IPv4-compatible or reserved)"
    if value >> 120 == 0xFF:
        return "is a multicast address"
    return None


@lru_cache(maxsize=16384)
def _address_or_problem(text: str) -> IPAddress | str:
    if "%" in text:
        return "has a zone id"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "is not an IP address"
    problem = address_problem(address)
    return address if problem is None else problem


def parse_address(text: str) -> IPAddress:
    """Parse one address as published; `ValueError` says why it is not usable."""
    result = _address_or_problem(text)
    if isinstance(result, str):
        raise ValueError(f"address {text!r} {result}")
    return result


def address_sort_key(address: IPAddress) -> tuple[int, int]:
    """IPv4 before IPv6, each by numeric value."""
    return (address.version, int(address))


def expand_name(name: str, domain: str) -> tuple[str, ...]:
    """The published forms of one lower-case name: FQDN then bare, or as given with a dot."""
    if "." in name or not domain:
        return (name,)
    return (f"{name}.{domain}", name)


def _unique_sorted(addresses: list[IPAddress]) -> list[IPAddress]:
    if len(addresses) < 2:
        return addresses
    ordered = sorted(addresses)
    return [a for i, a in enumerate(ordered) if i == 0 or a != ordered[i - 1]]


def _select_addresses(
    node: NodeInfo, address_types: tuple[str, ...], notes: list[str]
) -> tuple[IPAddress, ...]:
    """The node's published addresses by per-family preference; notes any unusable ones."""
    best4 = best6 = len(address_types)
    picks4: list[IPAddress] = []
    picks6: list[IPAddress] = []
    for kind, text in node.addresses:
        if kind not in address_types:
            continue
        rank = address_types.index(kind)
        result = _address_or_problem(text)
        if isinstance(result, str):
            notes.append(f"ignored {kind} {text!r}: {result}")
        elif result.version == 4:
            if rank < best4:
                best4, picks4 = rank, [result]
            elif rank == best4:
                picks4.append(result)
        elif rank < best6:
            best6, picks6 = rank, [result]
        elif rank == best6:
            picks6.append(result)
    return (*_unique_sorted(picks4), *_unique_sorted(picks6))


class _Claimant(NamedTuple):
    """A host that claims names, with what it publishes if it loses none of them."""

    owner: str  # tie-break key: the node name, or the static host's canonical name
    label: str  # how a `Collision` names it
    description: str  # how a decision reason names it
    claims: tuple[tuple[str, int], ...]  # (name, rank) in publication order, canonical first
    host: Host | None  # None: a skipped node, holding its names and publishing nothing
    node: NodeInfo | None
    notes: tuple[str, ...]


class _NodePlan(NamedTuple):
    """What one node contributes, before collisions."""

    claimant: _Claimant | None
    decision: NodeDecision


def _decision(
    node: NodeInfo,
    names: tuple[str, ...],
    addresses: tuple[IPAddress, ...],
    reasons: Sequence[str],
    skip: SkipReason | None = None,
) -> NodeDecision:
    """Published unless `skip` says why not (its text is the first of `reasons`)."""
    # Positional: keyword arguments make frozen dataclass construction ~1.5x slower.
    return NodeDecision(
        node.name,
        names,
        addresses,
        node.ready,
        node.unschedulable,
        skip is None,
        "; ".join(reasons) or None,
        skip,
    )


def _lost_decision(
    node: NodeInfo,
    names: tuple[str, ...],
    addresses: tuple[IPAddress, ...],
    notes: Iterable[str],
    lost: Iterable[tuple[str, str]],
) -> NodeDecision:
    """The decision of a node that lost some names (`lost`: name and why) and keeps `names`."""
    reasons = [*([] if names else ["lost every name"]), *notes, *(note for _, note in lost)]
    return _decision(node, names, addresses, reasons, None if names else SkipReason.NAME_COLLISION)


def _name_claims(
    raw: str,
    alias_raw: str | None,
    policy: RecordPolicy,
    skip: list[tuple[SkipReason, str]],
    notes: list[str],
) -> list[tuple[str, int]]:
    """The (name, rank) claims of a node named `raw` with the Hostname `alias_raw`, canonical
    first; why its name is refused goes to `skip`, why its Hostname is to `notes`."""
    name = fold(raw)
    problem = name_problem(name)
    if problem is not None:
        skip.append((SkipReason.INVALID_NAME, f"invalid name {raw!r}: {problem}"))
        return []
    if (refused := refusal(name, policy)) is not None:
        skip.append((SkipReason.REFUSED_NAME, f"name not published: {refused}"))
        return []
    claims = [(n, _RANK_NODE) for n in expand_name(name, policy.domain)]
    alias = fold(alias_raw) if alias_raw else alias_raw
    if alias is not None and alias != name:
        problem = name_problem(alias)
        if problem is None:
            problem = refusal(alias, policy)
        if problem is not None:
            notes.append(f"ignored Hostname {alias_raw!r}: {problem}")
        else:
            own = [n for n, _ in claims]
            claims += [(n, _RANK_ALIAS) for n in expand_name(alias, policy.domain) if n not in own]
    return claims


_HIDDEN: Final = "hidden:"  # label prefix of a Node outside the label selection


@lru_cache(maxsize=8192)
def _hidden_claimant(name: str, hostname: str | None, policy: RecordPolicy) -> _Claimant | None:
    """A Node outside the label selection: it publishes nothing, and holds its names at their
    ranks as a skipped node does (None: it has no valid name nodehosts would publish)."""
    claims = _name_claims(name, hostname, policy, [], [])
    if not claims:
        return None
    description = f"node {name!r} (outside the label selector)"
    return _Claimant(name, _HIDDEN + name, description, tuple(claims), None, None, ())


# Memoised (NodeInfo and RecordPolicy are immutable and hashable). Every build touches every
# live node, so stale versions are evicted first; sized for 5000 nodes plus churn.
@lru_cache(maxsize=8192)
def _plan_node(
    node: NodeInfo, policy: RecordPolicy, static_addresses: frozenset[tuple[IPAddress, str]]
) -> _NodePlan:
    """Everything about one node that does not depend on the other hosts' names.

    `static_addresses`: (address, static host description) pairs; the node never gets those.
    One frozenset per build, so the memoisation key stays cheap to hash and compare."""
    notes: list[str] = []
    skip: list[tuple[SkipReason, str]] = []
    claims = _name_claims(node.name, node.hostname, policy, skip, notes)

    addresses = _select_addresses(node, policy.address_types, notes)
    if not addresses:
        kinds = " or ".join(policy.address_types)
        skip.append((SkipReason.NO_ADDRESS, f"no usable {kinds} address"))
    elif static_addresses:
        owners = dict(static_addresses)
        if not owners.keys().isdisjoint(addresses):
            notes += [
                f"ignored {a}: {a} is the address of {owners[a]}" for a in addresses if a in owners
            ]
            addresses = tuple(a for a in addresses if a not in owners)
            if not addresses:
                why = "no usable address left: every one belongs to a static host"
                skip.append((SkipReason.NO_ADDRESS, why))
    if policy.exclude_not_ready and node.ready is not True:
        skip.append((SkipReason.NOT_READY, "not ready"))
    if policy.exclude_unschedulable and node.unschedulable:
        skip.append((SkipReason.UNSCHEDULABLE, "unschedulable"))

    names = tuple([n for n, _ in claims])
    if skip:
        # Its names stay its own while it is skipped (rebooting, cordoned, address-less):
        # else another node's Hostname or dotted name would take them meanwhile.
        holder = None
        if claims:
            holder = _Claimant(
                node.name, node.name, f"node {node.name!r}", tuple(claims), None, node, ()
            )
        reasons = [text for _, text in skip] + notes
        return _NodePlan(holder, _decision(node, names, addresses, reasons, skip[0][0]))
    decision = _decision(node, names, addresses, notes)
    host = Host(names, addresses, "node", node.name)
    claimant = _Claimant(
        node.name, node.name, f"node {node.name!r}", tuple(claims), host, node, tuple(notes)
    )
    return _NodePlan(claimant, decision)


def _static_forms(name: str, domain: str) -> tuple[str, ...]:
    """A static name's forms: as a node name's, plus the bare `x` of an `x.<domain>` (the admin
    wrote one host either way; a node must not take the other form)."""
    if domain and is_under(name, domain):
        bare = name[: -len(domain) - 1]
        if "." not in bare:
            return (name, bare)
    return expand_name(name, domain)


def _static_claimant(host: Host, domain: str) -> tuple[_Claimant, Host]:
    """A claimant for a static host, and the host it publishes; its names and addresses must
    already be valid."""
    claims: list[tuple[str, int]] = []
    seen: set[str] = set()
    for raw in host.names:
        name = fold(raw)
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(f"static host name {raw!r}: {problem} (use parse_hosts)")
        for expanded in _static_forms(name, domain):
            if expanded not in seen:
                seen.add(expanded)
                claims.append((expanded, _RANK_STATIC))
    if not claims or not host.addresses:
        raise ValueError(f"static host {host.names!r} needs names and addresses")
    for address in host.addresses:
        problem = address_problem(address)
        if problem is not None:
            raise ValueError(f"static host {host.names[0]!r}: address {address} {problem}")
    addresses = tuple(sorted(set(host.addresses), key=address_sort_key))
    names = tuple(n for n, _ in claims)
    published = Host(names=names, addresses=addresses, origin="static", node=None)
    claimant = _Claimant(
        owner=names[0],
        label=f"static:{names[0]}",
        description=f"static host {names[0]!r}",
        claims=tuple(claims),
        host=published,
        node=None,
        notes=(),
    )
    return claimant, published


def _static_claimants(static: Iterable[Host], domain: str) -> list[_Claimant]:
    """One claimant per canonical name (hosts sharing it are merged, as the parser does)."""
    groups: dict[str, list[tuple[_Claimant, Host]]] = {}
    for static_host in static:
        claimant, host = _static_claimant(static_host, domain)
        groups.setdefault(claimant.owner, []).append((claimant, host))
    claimants: list[_Claimant] = []
    for _, group in sorted(groups.items()):
        if len(group) == 1:
            claimants.append(group[0][0])
            continue
        group.sort(key=lambda c: (c[0].claims, [address_sort_key(a) for a in c[1].addresses]))
        claims = tuple(dict.fromkeys(claim for c, _ in group for claim in c.claims))
        addresses = {address for _, h in group for address in h.addresses}
        host = Host(
            names=tuple(name for name, _ in claims),
            addresses=tuple(sorted(addresses, key=address_sort_key)),
            origin="static",
            node=None,
        )
        claimants.append(group[0][0]._replace(claims=claims, host=host))
    return claimants


def _resolve_collisions(
    claimants: Sequence[_Claimant],
) -> tuple[list[Collision], dict[int, list[tuple[str, str]]]]:
    """The collisions, and for each losing claimant (by index) each name lost and why."""
    # Claimants are in a total deterministic order, so the index breaks exact ties.
    first: dict[str, tuple[int, str, int]] = {}
    contested: dict[str, list[tuple[int, str, int]]] = {}
    for index, claimant in enumerate(claimants):
        for name, rank in claimant.claims:
            claim = (rank, claimant.owner, index)
            earlier = first.setdefault(name, claim)
            if earlier is not claim:
                contested.setdefault(name, [earlier]).append(claim)
    collisions: list[Collision] = []
    lost: dict[int, list[tuple[str, str]]] = {}
    for name in sorted(contested):
        ranked = sorted(contested[name])
        if all(claimants[index].label.startswith(_HIDDEN) for *_, index in ranked):
            continue  # only Nodes outside the label selection: not published, not reported
        if ranked[0][0] == _RANK_ALIAS:  # only Hostname aliases: nobody's own name
            note = _shared_alias_note(name, [claimants[index].description for *_, index in ranked])
            for _, _, index in ranked:
                lost.setdefault(index, []).append((name, note))
            collisions.append(
                Collision(name, None, tuple(claimants[index].label for _, _, index in ranked))
            )
            continue
        winner = claimants[ranked[0][2]]
        losers = [index for _, _, index in ranked[1:]]
        for index in losers:
            lost.setdefault(index, []).append((name, f"lost name {name!r} to {winner.description}"))
        collisions.append(
            Collision(name, winner.label, tuple(claimants[index].label for index in losers))
        )
    return collisions, lost


def _shared_alias_note(name: str, descriptions: Iterable[str]) -> str:
    # Whoever got it, the others could not tell it from a take-over: nobody does.
    return f"dropped name {name!r}: the Hostname of more than one node ({', '.join(descriptions)})"


def _node_name(node: NodeInfo) -> str:
    return node.name


def _node_sort_key(node: NodeInfo) -> tuple[str, tuple[tuple[str, str], ...], int, bool]:
    ready = {True: 2, False: 1, None: 0}[node.ready]
    return (node.name, node.addresses, ready, node.unschedulable)


def _decision_node(decision: NodeDecision) -> str:
    return decision.node


def _collision_name(collision: Collision) -> str:
    return collision.name


def _canonical(host: Host) -> str:
    return host.names[0]


# No Nodes outside the label selection (the default of `hidden`).
NO_HIDDEN: Final[Mapping[str, str | None]] = MappingProxyType({})


def build_publication(
    nodes: Iterable[NodeInfo],
    static: Sequence[Host],
    policy: RecordPolicy,
    hidden: Mapping[str, str | None] = NO_HIDDEN,
) -> Publication:
    """Apply the record policy to every node and static host (see the module docstring).

    Node names are expected to be unique (they are, in the API); duplicates still give a
    deterministic result. Static hosts must hold valid names and usable addresses, as
    `parse_hosts` returns them; anything else is a caller bug and raises `ValueError`.
    `hidden`: the Nodes outside the label selection, name -> Hostname (None: none); they
    publish nothing and keep their names from the selected nodes (module docstring, "Label
    selection"); an entry named like one of `nodes` is ignored, so the whole cluster may be
    passed.
    """
    return _build(nodes, static, policy, hidden)[0]


def hidden_nodes(cluster: Iterable[NodeInfo]) -> dict[str, str | None]:
    """The `hidden` input from a view of Nodes outside (or of all) the selection."""
    return {node.name: node.hostname for node in cluster}


def _build(
    nodes: Iterable[NodeInfo],
    static: Sequence[Host],
    policy: RecordPolicy,
    hidden: Mapping[str, str | None] = NO_HIDDEN,
) -> tuple[Publication, list[_Claimant], frozenset[tuple[IPAddress, str]], list[_NodePlan]]:
    """`build_publication`, with what `RecordIndex` starts from: the claimants (nodes by name,
    hidden nodes by name, then static hosts), the static addresses and each node's plan (in
    node name order)."""
    ordered = sorted(nodes, key=_node_name)
    if any(a.name == b.name for a, b in itertools.pairwise(ordered)):
        ordered.sort(key=_node_sort_key)  # duplicate names: order them by content too

    statics = _static_claimants(static, policy.domain)
    # (address, static host) pairs, one per address (the smallest name, so reasons are
    # deterministic): no node may publish these addresses. A frozenset caches its hash.
    first_static: dict[IPAddress, str] = {}
    for claimant in statics:  # sorted by canonical name
        assert claimant.host is not None  # a static host always publishes
        for address in claimant.host.addresses:
            first_static.setdefault(address, claimant.description)
    static_addresses = frozenset(first_static.items())

    decisions: list[NodeDecision] = []
    claimants: list[_Claimant] = []
    decision_of: list[int] = []  # claimant index -> index of its decision
    plans: list[_NodePlan] = []
    for node in ordered:
        plan = _plan_node(node, policy, static_addresses)
        plans.append(plan)
        if plan.claimant is not None:
            claimants.append(plan.claimant)
            decision_of.append(len(decisions))
        decisions.append(plan.decision)
    if hidden:
        selected = {node.name for node in ordered}
        for name in sorted(hidden.keys() - selected):
            held = _hidden_claimant(name, hidden[name], policy)
            if held is not None:
                claimants.append(held)
    claimants.extend(statics)

    collisions, lost = _resolve_collisions(claimants)

    hosts: list[Host] = []
    for index, claimant in enumerate(claimants):
        if claimant.host is None:  # a skipped node: its decision stays the plan's
            continue
        lost_names = lost.get(index)
        if lost_names is None:
            hosts.append(claimant.host)
            continue
        gone = {name for name, _ in lost_names}
        names = tuple(n for n in claimant.host.names if n not in gone)
        if names:
            hosts.append(
                Host(
                    names=names,
                    addresses=claimant.host.addresses,
                    origin=claimant.host.origin,
                    node=claimant.host.node,
                )
            )
        if claimant.node is not None:
            decisions[decision_of[index]] = _lost_decision(
                claimant.node, names, claimant.host.addresses, claimant.notes, lost_names
            )
    hosts.sort(key=_canonical)
    publication = Publication(
        records=RecordSet(tuple(hosts)),
        decisions=tuple(decisions),
        collisions=tuple(collisions),
    )
    return publication, claimants, static_addresses, plans


class PublicationCounts(NamedTuple):
    """What metrics and the systemd status line show of a publication, as counts."""

    nodes: int  # decisions
    published: int  # nodes published
    skipped: Mapping[SkipReason, int]  # nodes skipped, by their first reason (none: absent)
    hosts: int
    ipv4: int  # addresses published, by family
    ipv6: int
    collisions: int


def publication_counts(publication: Publication) -> PublicationCounts:
    """The counts by walking the whole publication (`RecordIndex.counts` keeps them instead)."""
    skipped: dict[SkipReason, int] = {}
    published = 0
    for decision in publication.decisions:
        published += decision.published
        if decision.skip is not None:
            skipped[decision.skip] = skipped.get(decision.skip, 0) + 1
    ipv4 = ipv6 = 0
    for host in publication.records.hosts:
        for address in host.addresses:
            if address.version == 4:
                ipv4 += 1
            else:
                ipv6 += 1
    return PublicationCounts(
        len(publication.decisions),
        published,
        MappingProxyType(skipped),
        len(publication.records),
        ipv4,
        ipv6,
        len(publication.collisions),
    )


class RecordIndex:
    """The record policy kept up to date one node at a time: `build_publication`'s exact result
    for the current inputs, at a cost per changed node that does not grow with the cluster.

    Per name it keeps who claims it; a changed node re-ranks only the names it claimed before
    or claims now, and recomputes only the hosts and decisions of those names' claimants (a
    node that wins or loses a name changes the others' hosts, decisions and the `Collision`).
    Hosts, decisions and collisions are kept in sorted lists, so a `Publication` is three
    tuple copies. A changed policy or static host set rebuilds everything (each node's plan
    depends on them). `changes()` says which hosts differ from the previous `publication()`,
    so sinks re-render only those (`Answerer`'s and `HostsRenderer`'s `changes`).
    """

    def __init__(
        self,
        policy: RecordPolicy | None = None,
        static: Sequence[Host] = (),
        hidden: Mapping[str, str | None] = NO_HIDDEN,
    ) -> None:
        self._policy = policy if policy is not None else RecordPolicy()
        self._static: tuple[Host, ...] = ()
        self._nodes: dict[str, NodeInfo] = {}
        # Nodes outside the label selection: name -> Hostname (a copy), and the mapping last
        # given (the same object again: nothing to compare)
        self._hidden: dict[str, str | None] = dict(hidden)
        self._hidden_given = hidden
        self._static_addresses: frozenset[tuple[IPAddress, str]] = frozenset()
        # label -> claimant; name -> {label: (rank, owner)} of everyone claiming it
        self._claimants: dict[str, _Claimant] = {}
        self._claims: dict[str, str | list[str]] = {}
        # node name -> its plan's decision before collisions, and its claimant's label
        self._plans: dict[str, _NodePlan] = {}
        # label -> the host it publishes now (None: lost every name)
        self._host_of: dict[str, Host | None] = {}
        # sorted by canonical name, node name and name, in chunks a publication shares
        self._hosts: SortedChunks[Host] = SortedChunks((), _canonical)
        self._decisions: SortedChunks[NodeDecision] = SortedChunks((), _decision_node)
        self._collisions: SortedChunks[Collision] = SortedChunks((), _collision_name)
        # since the last publication(): canonical -> host it had then (None: none); None when
        # everything was rebuilt
        self._touched: dict[str, Host | None] | None = {}
        self._decisions_touched: dict[str, NodeDecision | None] = {}
        self._publication: Publication | None = None
        # kept with the hosts and decisions: published nodes, skipped by reason, [_, v4, v6]
        self._published = 0
        self._skipped: dict[SkipReason, int] = {}
        self._families = [0, 0, 0, 0, 0, 0, 0]  # indexed by IP version
        # the record set of the previous changes() call
        self._changes_base: RecordSet | None = None
        self._rebuild(static)

    # --- inputs

    def update(
        self,
        nodes: Mapping[str, NodeInfo],
        static: Sequence[Host],
        policy: RecordPolicy,
        changed: Iterable[str] | None = None,
        hidden: Mapping[str, str | None] = NO_HIDDEN,
    ) -> Publication:
        """Bring the index to these inputs and return the result.

        `nodes` maps each node's name to it (as the inventory does). `changed`, when the caller
        knows it, names every node added, changed or removed since the previous call; without
        it the nodes are compared by identity (the inventory keeps an unchanged node's
        object; a new equal object is no change). `hidden` is `build_publication`'s: pass the
        same mapping object while it is unchanged (it is then not compared), a new one when
        it changes (only the entries that differ are re-ranked)."""
        hidden_changed: Iterable[str] = ()
        if hidden is not self._hidden_given:
            self._hidden_given = hidden
            if hidden != self._hidden:
                was = self._hidden
                self._hidden = dict(hidden)
                hidden_changed = {name for name, _ in was.items() ^ self._hidden.items()}
        if policy != self._policy or tuple(static) != self._static:
            self._policy = policy
            self._nodes = dict(nodes)
            self._rebuild(static)
            return self.publication()
        old = self._nodes
        limit = max(64, len(old) // 4)  # more changed nodes: one sorted build is cheaper
        for name in hidden_changed:
            self._sync_hidden(name)
        realign = False
        if changed is not None:
            candidates = list(dict.fromkeys(changed))
        else:
            candidates = []
            if len(old) <= len(nodes):
                # `old` mirrors the previous mapping's order, and a dict keeps a changed key
                # in place and appends new ones: walk both side by side, by identity, without
                # hashing (C-level; ~3x faster than looking every key up). Every changed or
                # new node is a candidate; a reordering adds spurious ones, dropped below.
                values = map(operator.is_not, old.values(), nodes.values())
                candidates = list(itertools.compress(nodes, values))
                candidates += itertools.islice(nodes, len(old), None)
            if len(old) > len(nodes) or len(candidates) > limit:  # deleted or reordered
                keys = list(nodes)
                values = map(operator.is_not, map(old.get, keys), nodes.values())
                candidates = list(itertools.compress(keys, values))
                realign = True
        if len(candidates) > limit:
            self._nodes = dict(nodes)
            self._rebuild(self._static)
            return self.publication()
        for name in candidates:
            node = nodes.get(name)
            before = old.get(name)
            if node is None:
                if before is not None:
                    self.remove_node(name)
            elif before is node:
                realign = True
            elif before is not None and before == node:
                old[name] = node
            else:
                self.set_node(node)
        if len(old) != len(nodes):  # every key of `nodes` is in `old` now: some were deleted
            for name in old.keys() - nodes.keys():
                self.remove_node(name)
            realign = True
        if realign and changed is None:
            self._nodes = dict(nodes)
        return self.publication()

    def set_node(self, node: NodeInfo) -> None:
        """Add or replace the node named `node.name`."""
        self._nodes[node.name] = node
        self._replace_plan(node.name, _plan_node(node, self._policy, self._static_addresses))
        if node.name in self._hidden:
            self._sync_hidden(node.name)

    def remove_node(self, name: str) -> None:
        if self._nodes.pop(name, None) is not None:
            self._replace_plan(name, None)
            if name in self._hidden:
                self._sync_hidden(name)

    # --- results

    def publication(self) -> Publication:
        """The result for the current inputs; equal to `build_publication` of them."""
        if self._publication is None:
            self._publication = Publication(
                records=RecordSet(self._hosts.view()),
                decisions=self._decisions.view(),
                collisions=self._collisions.view(),
            )
        return self._publication

    def changes(self) -> HostChanges | None:
        """The hosts that differ between the record set of the previous call and the current
        one; None on the first call and after a rebuild (then compare everything)."""
        touched, self._touched = self._touched, {}
        before, after = self._changes_base, self.publication().records
        self._changes_base = after
        if touched is None or before is None:
            return None
        removed: list[Host] = []
        added: list[Host] = []
        for canonical in sorted(touched):
            old, new = touched[canonical], self._host_at(canonical)
            if old is new or old == new:
                continue
            if old is not None:
                removed.append(old)
            if new is not None:
                added.append(new)
        return HostChanges(before, after, tuple(removed), tuple(added))

    def decision_changes(self) -> list[tuple[str, NodeDecision | None, NodeDecision | None]]:
        """(node, decision before, decision now) for each node whose decision changed since the
        previous call (None: no such node then or now), by node name."""
        touched, self._decisions_touched = self._decisions_touched, {}
        out = []
        for name in sorted(touched):
            before, now = touched[name], self._decision_at(name)
            if before is not now and before != now:
                out.append((name, before, now))
        return out

    def counts(self) -> PublicationCounts:
        """`publication_counts(self.publication())`, kept up to date per change instead of
        walking every node and host (metrics and the systemd status read it per publication)."""
        return PublicationCounts(
            len(self._decisions),
            self._published,
            MappingProxyType({k: v for k, v in self._skipped.items() if v}),
            len(self._hosts),
            self._families[4],
            self._families[6],
            len(self._collisions),
        )

    # --- internals

    def _rebuild(self, static: Sequence[Host]) -> None:
        """Everything from scratch (at start, and when the policy or static hosts change)."""
        # Decisions as of the previous decision_changes(), to report only what differs.
        decisions_before: dict[str, NodeDecision | None] = {
            decision.node: decision for decision in self._decisions.view()
        }
        decisions_before.update(self._decisions_touched)
        publication, claimants, static_addresses, plans = _build(
            self._nodes.values(), static, self._policy, self._hidden
        )
        self._static = tuple(static)
        self._static_addresses = static_addresses
        self._plans = {plan.decision.node: plan for plan in plans}
        self._claimants = {claimant.label: claimant for claimant in claimants}
        self._claims = {}
        for claimant in claimants:
            for name, _ in claimant.claims:
                self._add_claim(name, claimant.label)
        hosts = {host.canonical: host for host in publication.records.hosts}
        self._host_of = {}
        for claimant in claimants:
            if claimant.host is None:
                continue
            for name, _ in claimant.claims:
                if name in hosts and self._winner(name) == claimant.label:
                    self._host_of[claimant.label] = hosts[name]
                    break
        self._hosts = SortedChunks(publication.records.hosts, _canonical)
        self._decisions = SortedChunks(publication.decisions, _decision_node)
        self._collisions = SortedChunks(publication.collisions, _collision_name)
        counts = publication_counts(publication)
        self._published = counts.published
        self._skipped = dict(counts.skipped)
        self._families = [0, 0, 0, 0, counts.ipv4, 0, counts.ipv6]
        self._touched = None
        self._decisions_touched = decisions_before
        for decision in publication.decisions:
            decisions_before.setdefault(decision.node, None)
        self._publication = Publication(
            RecordSet(self._hosts.view()), self._decisions.view(), self._collisions.view()
        )

    # Claims: name -> the claimant's label, or a list of labels when contested (rare: a list
    # per name would cost ~3 MB for 5000 nodes).

    def _add_claim(self, name: str, label: str) -> None:
        current = self._claims.get(name)
        if current is None:
            self._claims[name] = label
        elif isinstance(current, str):
            self._claims[name] = [current, label]
        else:
            current.append(label)

    def _drop_claim(self, name: str, label: str) -> None:
        current = self._claims[name]
        if isinstance(current, str):
            del self._claims[name]
            return
        current.remove(label)
        if len(current) == 1:
            self._claims[name] = current[0]

    def _contenders(self, name: str) -> list[str]:
        current = self._claims.get(name)
        if current is None:
            return []
        return [current] if isinstance(current, str) else current

    def _rank(self, name: str) -> Callable[[str], tuple[int, str]]:
        """Sort key of a claimant (by label) for `name`: rank, then owner."""

        def key(label: str) -> tuple[int, str]:
            claimant = self._claimants[label]
            return (dict(claimant.claims)[name], claimant.owner)

        return key

    def _ranked(self, name: str) -> tuple[list[str], bool]:
        """The claimants of a contested `name`, best first, and whether nobody gets it (even the
        best claim is a Hostname alias: it is nobody's own name)."""
        key = self._rank(name)
        ranked = sorted(self._contenders(name), key=key)
        return ranked, key(ranked[0])[0] == _RANK_ALIAS

    def _winner(self, name: str) -> str | None:
        current = self._claims[name]
        if isinstance(current, str):
            return current
        ranked, nobody = self._ranked(name)
        return None if nobody else ranked[0]

    def _replace_plan(self, node: str, plan: _NodePlan | None) -> None:
        before = self._plans.pop(node, None)
        if plan is not None:
            self._plans[node] = plan
        new = plan.claimant if plan is not None else None
        self._replace_claimant(before.claimant if before is not None else None, new)
        if new is None:
            self._set_decision(node, plan.decision if plan is not None else None)

    def _sync_hidden(self, name: str) -> None:
        """Claim a hidden node's names while it is hidden and no selected node has its name."""
        current = self._claimants.get(_HIDDEN + name)
        wanted = None
        if name in self._hidden and name not in self._nodes:
            wanted = _hidden_claimant(name, self._hidden[name], self._policy)
        if wanted is not current:
            self._replace_claimant(current, wanted)

    def _replace_claimant(self, old: _Claimant | None, new: _Claimant | None) -> None:
        """Swap one claimant for another (None: none) and re-rank the names either claims."""
        self._publication = None
        names: dict[str, None] = {}
        dirty: dict[str, None] = {}
        if old is not None:
            del self._claimants[old.label]
            for name, _ in old.claims:
                names[name] = None
                self._drop_claim(name, old.label)
            self._set_host(old.label, None)
        if new is not None:
            self._claimants[new.label] = new
            for name, _ in new.claims:
                names[name] = None
                self._add_claim(name, new.label)
            dirty[new.label] = None
        for name in names:
            for label in self._contenders(name):
                dirty[label] = None
            self._set_collision(name)
        for label in dirty:
            self._refresh(self._claimants[label])

    def _refresh(self, claimant: _Claimant) -> None:
        """Recompute one claimant's host and (for a node) decision from the current claims."""
        if claimant.host is None:  # a skipped or hidden node: holds its names, publishes nothing
            if claimant.node is not None:
                self._set_decision(claimant.node.name, self._plans[claimant.node.name].decision)
            return
        lost: list[tuple[str, str]] = []
        for name, _ in claimant.claims:
            winner = self._winner(name)
            if winner is None:
                descriptions = [
                    self._claimants[label].description for label in self._ranked(name)[0]
                ]
                lost.append((name, _shared_alias_note(name, descriptions)))
            elif winner != claimant.label:
                description = self._claimants[winner].description
                lost.append((name, f"lost name {name!r} to {description}"))
        if not lost:
            self._set_host(claimant.label, claimant.host)
            if claimant.node is not None:
                self._set_decision(claimant.node.name, self._plans[claimant.node.name].decision)
            return
        lost.sort()
        gone = {name for name, _ in lost}
        names = tuple(n for n in claimant.host.names if n not in gone)
        host = claimant.host
        self._set_host(
            claimant.label,
            Host(names, host.addresses, host.origin, host.node) if names else None,
        )
        if claimant.node is not None:
            self._set_decision(
                claimant.node.name,
                _lost_decision(claimant.node, names, host.addresses, claimant.notes, lost),
            )

    def _set_host(self, label: str, host: Host | None) -> None:
        before = self._host_of.get(label)
        if before is host or (before is not None and before == host):
            return
        if host is None:
            self._host_of.pop(label, None)
        else:
            self._host_of[label] = host
        if before is not None:
            for address in before.addresses:
                self._families[address.version] -= 1
            self._touch(before.canonical)
            # While one change is applied two hosts may briefly share a canonical name (the
            # winner is placed before the loser gives it up): remove this very host.
            self._hosts.remove(before)
        if host is not None:
            for address in host.addresses:
                self._families[address.version] += 1
            self._touch(host.canonical)
            self._hosts.insert(host)

    def _touch(self, canonical: str) -> None:
        if self._touched is not None and canonical not in self._touched:
            self._touched[canonical] = self._host_at(canonical)

    def _host_at(self, canonical: str) -> Host | None:
        return self._hosts.find(canonical)

    def _decision_at(self, node: str) -> NodeDecision | None:
        return self._decisions.find(node)

    def _set_decision(self, node: str, decision: NodeDecision | None) -> None:
        before = self._decisions.find(node)
        if before is decision or (before is not None and before == decision):
            return
        if node not in self._decisions_touched:
            self._decisions_touched[node] = before
        for one, sign in ((before, -1), (decision, 1)):
            if one is not None:
                self._published += sign * one.published
                if one.skip is not None:
                    self._skipped[one.skip] = self._skipped.get(one.skip, 0) + sign
        self._decisions.swap(before, decision)

    def _set_collision(self, name: str) -> None:
        contenders = self._contenders(name)
        collision = None
        if len(contenders) > 1 and not all(label.startswith(_HIDDEN) for label in contenders):
            ranked, nobody = self._ranked(name)
            if nobody:
                collision = Collision(name, None, tuple(ranked))
            else:
                collision = Collision(name, ranked[0], tuple(ranked[1:]))
        self._collisions.swap(self._collisions.find(name), collision)
