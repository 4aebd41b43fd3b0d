"""The values that flow from sources to sinks.

Contract: everything here is immutable and compares by value, so a sink can tell "nothing
changed" with one `==`. `NodeInfo` keeps only what nodehosts publishes or reports about a
Node; everything else in the (large, heartbeat-churning) Node JSON is dropped at the parsing
boundary (`nodehosts.core.nodes.node_from_json`).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What one Node contributes: its name, its addresses (API order) and its state."""

    name: str
    # (type, address) pairs exactly as listed in status.addresses,
    # e.g. ("InternalIP", "10.240.0.101").
    # Kept as strings: validation and family split are the record policy's job, so a bad
    # address is reported per node instead of failing the whole Node.
    addresses: tuple[tuple[str, str], ...]
    # True/False from the Ready condition, None when the kubelet has not reported one.
    ready: bool | None
    unschedulable: bool

    @property
    def hostname(self) -> str | None:
        """The first `Hostname` address, the name the apiserver uses to reach the kubelet."""
        for kind, value in self.addresses:
            if kind == "Hostname":
                return value
        return None


@dataclass(frozen=True, slots=True)
class Host:
    """One published host: its names (canonical first) and its addresses."""

    # Lower-case. names[0] is the canonical name: the FQDN `<name>.<domain>` for a node name
    # without a dot (or the bare name when the domain is empty), the name as given otherwise.
    names: tuple[str, ...]
    # Sorted: IPv4 before IPv6, each by numeric value. Never empty.
    addresses: tuple[IPAddress, ...]
    origin: Literal["node", "static"]
    # The Node's metadata.name for origin "node"; None for static hosts.
    node: str | None = None

    @property
    def canonical(self) -> str:
        return self.names[0]


@dataclass(frozen=True, slots=True)
class RecordSet:
    """Everything published, sorted by canonical name: equal content gives equal objects."""

    # A tuple, or a `Chunked` from the record index (equal to the tuple of its items).
    hosts: Sequence[Host] = ()

    def __len__(self) -> int:
        return len(self.hosts)

    def by_name(self) -> Mapping[str, Host]:
        """Every published name (lower-case) -> its host. Names are unique across hosts."""
        return {name: host for host in self.hosts for name in host.names}

    def address_count(self) -> int:
        return sum(len(host.addresses) for host in self.hosts)


class SkipReason(enum.StrEnum):
    """Why a node publishes nothing (its first cause), for metrics: each value is a label of
    `nodehosts_nodes_skipped{reason}`. An enum, so rewording the human text
    (`NodeDecision.reason`, which also says how to allow a refused name) cannot move a node to
    another label."""

    INVALID_NAME = "invalid_name"  # metadata.name is not a valid host name
    REFUSED_NAME = "refused_name"  # a valid name the record policy does not let a node have
    NO_ADDRESS = "no_address"  # no usable address of the wanted types (or all a static host's)
    NOT_READY = "not_ready"  # records.exclude_not_ready
    UNSCHEDULABLE = "unschedulable"  # records.exclude_unschedulable
    NAME_COLLISION = "name_collision"  # lost every name to other hosts


@dataclass(frozen=True, slots=True)
class NodeDecision:
    """Why a node is (or is not) published, for `nodehosts dump` and the logs."""

    node: str
    names: tuple[str, ...]
    addresses: tuple[IPAddress, ...]
    ready: bool | None
    unschedulable: bool
    published: bool
    # Why the node was skipped, or a note on what was dropped (a lost name collision).
    reason: str | None = None
    # The first cause, when not published (None when published).
    skip: SkipReason | None = None


@dataclass(frozen=True, slots=True)
class Collision:
    """A name claimed by more than one host; `winner` keeps it, the others lose it (no winner:
    a Hostname alias of several nodes and nobody's own name, published for none of them)."""

    name: str
    winner: str | None
    losers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Publication:
    """The record policy's full result: what to publish and why."""

    records: RecordSet
    # Tuples, or `Chunked` from the record index.
    decisions: Sequence[NodeDecision] = ()
    collisions: Sequence[Collision] = field(default=())


@dataclass(frozen=True, slots=True)
class HostChanges:
    """What turned the record set `before` into `after`: the hosts only in `before` and the
    hosts only in `after`, each sorted by canonical name. Sinks that hold `before` re-render
    only these instead of comparing every host (`nodehosts.core.records.RecordIndex`)."""

    before: RecordSet
    after: RecordSet
    removed: tuple[Host, ...]
    added: tuple[Host, ...]
