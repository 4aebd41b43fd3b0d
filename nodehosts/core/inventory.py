"""List/watch state of one collection: the objects as of the last event, and their version.

Contract: an `Inventory` is fed the raw JSON the API sends (never client models) and keeps,
per `metadata.name`, only what its `parse` function extracts (for Nodes, a `NodeInfo`):

- `replace(items, resource_version)` installs the result of a complete LIST. `items` may be a
  lazy iterable (pages fetched while iterating); if iterating raises, the inventory is left
  exactly as it was, so a failed relist never loses the last good state.
- `apply(event_type, obj)` applies one watch event (ADDED, MODIFIED, DELETED, BOOKMARK) and
  returns True only when the parsed value of some object was added, removed or changed: a Node
  MODIFIED event that only moves heartbeat times returns False. Every event, bookmarks included,
  advances `resource_version` (the version to resume a watch from).
- An object `parse` rejects is reported through the `rejected` callback, once per name and
  reason (a broken Node heartbeating every 10 s is one report, not one per heartbeat), and its
  previous good value, if any, is kept. Nothing here raises for bad objects; an unknown event
  type is a caller bug and raises ValueError.
- `objects` is a read-only snapshot that is never mutated afterwards (it is rebuilt lazily
  after a change), so it can be handed to another thread or kept by a listener. It is a
  `Snapshot`: it also says which names changed since the snapshot before it, so a consumer
  that saw that one updates only those (issue 16: the record set's cost per change must not
  grow with the cluster).

Pure: no I/O, clocks, threads or kubernetes imports. Not thread-safe: one owner at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

from nodehosts.core.model import NodeInfo
from nodehosts.core.nodes import BadNode, node_from_json

__all__ = [
    "ADDED",
    "BOOKMARK",
    "DELETED",
    "EVENT_TYPES",
    "MODIFIED",
    "Inventory",
    "NodeInventory",
    "RejectedCallback",
    "Snapshot",
]

T = TypeVar("T")

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
EVENT_TYPES = frozenset({ADDED, MODIFIED, DELETED, BOOKMARK})

RejectedCallback = Callable[[str | None, str], None]
"""Called with (metadata.name or None, reason) for an object that cannot be used."""

_serials = itertools.count(1)


# In a snapshot's changes: the name was deleted.
_GONE: Final = object()
_MISSING: Final = object()


class Snapshot(Mapping[str, T]):
    """An inventory's objects at one moment, read-only: a base dict shared by many snapshots
    and never changed, plus the (few) changes since it. A new snapshot per watch event costs
    O(changes since the base), not a copy of the whole collection (at 20,000 Nodes a copy and
    its free were the event loop's largest cost per change, issue 16); the inventory starts a
    new base when the changes grow past a fraction of the collection.

    `serial` is unique in the process; `base` is the serial of the same inventory's snapshot
    before this one, and `changed` the names added, changed or removed since it (None: not
    known, after a complete LIST). `changed_since` gives them to a consumer that saw that one.
    """

    __slots__ = ("_changes", "_common", "_size", "base", "changed", "serial")

    def __init__(
        self,
        common: dict[str, T],
        changes: dict[str, Any],
        size: int,
        *,
        base: int | None = None,
        changed: frozenset[str] | None = None,
    ) -> None:
        self._common = common  # never changed: other snapshots share it
        self._changes = changes  # name -> value, or _GONE; this snapshot's own
        self._size = size
        self.serial = next(_serials)
        self.base = base
        self.changed = changed

    def changed_since(self, earlier: Mapping[str, T]) -> frozenset[str] | None:
        """The names that may differ from `earlier` when it is the snapshot just before this
        one (None otherwise: compare everything)."""
        if isinstance(earlier, Snapshot) and earlier.serial == self.base:
            return self.changed
        return None

    def __getitem__(self, name: str) -> T:
        changes = self._changes
        if changes:
            value = changes.get(name, _MISSING)
            if value is not _MISSING:
                if value is _GONE:
                    raise KeyError(name)
                return value  # type: ignore[no-any-return]
        return self._common[name]

    def __contains__(self, name: object) -> bool:
        changes = self._changes
        if changes and name in changes:
            return changes[name] is not _GONE
        return name in self._common

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        if not self._changes:
            return iter(self._common)
        return self._merged()

    def _merged(self) -> Iterator[str]:
        """A dict's order: a changed name where it was, added names at the end."""
        common, changes = self._common, self._changes
        for name in common:
            if changes.get(name, _MISSING) is not _GONE:
                yield name
        for name, value in changes.items():
            if value is not _GONE and name not in common:
                yield name

    def values(self) -> ValuesView[T]:
        return self._common.values() if not self._changes else super().values()

    def keys(self) -> KeysView[str]:
        return self._common.keys() if not self._changes else super().keys()

    def items(self) -> ItemsView[str, T]:
        return self._common.items() if not self._changes else super().items()


def _metadata(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        metadata = obj.get("metadata")
        if isinstance(metadata, dict):
            return metadata
    return {}


def _name_of(obj: Any) -> str | None:
    name = _metadata(obj).get("name")
    return name if isinstance(name, str) and name else None


def _version_of(obj: Any) -> str | None:
    version = _metadata(obj).get("resourceVersion")
    return version if isinstance(version, str) and version else None


class Inventory(Generic[T]):
    """The objects of one collection by name, as a LIST and the following watch events say."""

    def __init__(
        self,
        parse: Callable[[Any], T],
        *,
        errors: tuple[type[Exception], ...] = (ValueError,),
        rejected: RejectedCallback | None = None,
    ) -> None:
        self._parse = parse
        # Only these exceptions mean "a bad object"; anything else is a bug and propagates.
        self._errors = errors
        self._rejected_callback = rejected
        self._objects: dict[str, T] = {}
        self._snapshot: Snapshot[T] | None = None
        self._last_serial: int | None = None  # of the snapshot built last
        # names changed since that snapshot (None: replaced by a LIST)
        self._changed: set[str] | None = None
        # What snapshots share (None: make it anew), and what changed since it was made.
        self._common: dict[str, T] | None = None
        self._changes: dict[str, Any] = {}
        # name -> reason of objects currently rejected, so each problem is reported once.
        self._rejected: dict[str | None, str] = {}
        self.resource_version = ""
        self.synced = False

    @property
    def objects(self) -> Snapshot[T]:
        """A read-only snapshot of the current objects; later changes never show through it."""
        if self._snapshot is None:
            changed = None if self._changed is None else frozenset(self._changed)
            if self._common is None or len(self._changes) > max(64, len(self._objects) // 32):
                # A fresh copy every n/32 changes: O(32) per change, amortised.
                self._common, self._changes = dict(self._objects), {}
            self._snapshot = Snapshot(
                self._common,
                dict(self._changes),
                len(self._objects),
                base=self._last_serial,
                changed=changed,
            )
            self._last_serial = self._snapshot.serial
            self._changed = set()
        return self._snapshot

    def __len__(self) -> int:
        return len(self._objects)

    @property
    def rejected(self) -> Mapping[str | None, str]:
        """Objects currently rejected (name -> reason); None collects nameless objects."""
        return MappingProxyType(dict(self._rejected))

    def replace(self, items: Iterable[Any], resource_version: str) -> bool:
        """Install a complete LIST; return True when the parsed objects differ from before."""
        objects: dict[str, T] = {}
        rejected: dict[str | None, str] = {}
        for item in items:
            name = _name_of(item)
            try:
                value = self._parse(item)
            except self._errors as error:
                rejected[name] = str(error)
                # The object exists but cannot be read now: keep what we knew about it.
                if name is not None and name in self._objects:
                    objects[name] = self._objects[name]
                continue
            objects[name or _key_of(value)] = value
        # Nothing above touched self: a failing iterable leaves the inventory as it was.
        previous_rejected, self._rejected = self._rejected, {}
        for name, reason in rejected.items():
            self._reject(name, reason, previous_rejected)
        changed = objects != self._objects
        self._objects = objects
        if changed:
            self._snapshot = None
            self._changed = None
            self._common, self._changes = None, {}
        self.resource_version = resource_version
        self.synced = True
        return changed

    def apply(self, event_type: str, obj: Any) -> bool:
        """Apply one watch event; return True when a parsed object was added/removed/changed."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"not a watch event type for an inventory: {event_type!r}")
        version = _version_of(obj)
        if version is not None:
            self.resource_version = version
        if event_type == BOOKMARK:
            return False
        name = _name_of(obj)
        if event_type == DELETED:
            if name is None:
                self._reject(None, "DELETED event for an object without metadata.name")
                return False
            self._rejected.pop(name, None)
            if name not in self._objects:
                return False
            del self._objects[name]
            self._changed_one(name, _GONE)
            return True
        try:
            value = self._parse(obj)
        except self._errors as error:
            self._reject(name, str(error))
            return False
        key = name or _key_of(value)
        self._rejected.pop(key, None)
        if self._objects.get(key) == value:
            return False
        self._objects[key] = value
        self._changed_one(key, value)
        return True

    def _changed_one(self, name: str, value: Any) -> None:
        self._snapshot = None
        if self._common is not None:
            self._changes[name] = value
        if self._changed is not None:
            self._changed.add(name)

    def _reject(
        self,
        name: str | None,
        reason: str,
        previous: Mapping[str | None, str] | None = None,
    ) -> None:
        known = self._rejected if previous is None else previous
        already = known.get(name) == reason
        self._rejected[name] = reason
        if not already and self._rejected_callback is not None:
            self._rejected_callback(name, reason)


def _key_of(value: Any) -> str:
    # Only reached when parse accepted an object without metadata.name (a lenient parser):
    # fall back to the parsed value's own name.
    name = getattr(value, "name", None)
    if not isinstance(name, str):
        raise TypeError("parsed object has no name and the raw object has no metadata.name")
    return name


class NodeInventory(Inventory[NodeInfo]):
    """The cluster's Nodes as `NodeInfo`; heartbeat-only updates are not changes."""

    def __init__(self, *, rejected: RejectedCallback | None = None) -> None:
        super().__init__(node_from_json, errors=(BadNode,), rejected=rejected)
