"""The fake API server's objects: one global resourceVersion, an event history, LIST pages.

Contract: every collection shares one resourceVersion counter; each write (`add`, `modify`,
`edit`, `delete`, a PUT through `update`) bumps it and appends one `Event` to the history, which
keeps the newest `history_limit` events (None: all) like the apiserver's watch cache; `compact()`
drops it all, like etcd. Objects are kept as encoded JSON bytes, so a large LIST is a join.
`list_page` answers a LIST (paged over a consistent snapshot with continue tokens, 410 Expired for
a token older than the last compaction). Writers notify `changed` (a Condition on `lock`), which
open watches wait on. `lock` is re-entrant and also guards the server's own state: a
`with store.lock:` block makes several writes appear at once to watchers.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodehosts.testing.fake_apiserver.api import (
    ApiStatus,
    Json,
    ResourceType,
    SubresourceHandler,
    encode,
)
from nodehosts.testing.fake_apiserver.selectors import Selector
from nodehosts.testing.objects import timestamp

__all__ = ["Collection", "Entry", "Event", "Store"]

# LIST snapshots kept for continue tokens; an older token answers 410, as after a compaction.
_SNAPSHOTS = 16


@dataclass(slots=True)
class Entry:
    name: str
    labels: Mapping[str, str]
    data: bytes  # the encoded object, resourceVersion included


@dataclass(frozen=True, slots=True)
class Event:
    version: int
    resource: str
    type: str
    name: str
    data: bytes
    labels: Mapping[str, str]  # after the change (before it, for DELETED)
    old_labels: Mapping[str, str] | None  # before the change; None for ADDED
    # When the labels changed: the object as it was, at this event's version. A watch whose
    # selector it leaves gets this as DELETED, as the apiserver's watch cache sends it.
    left_data: bytes | None = None


@dataclass(slots=True)
class Collection:
    type: ResourceType
    subresources: dict[str, SubresourceHandler]
    entries: dict[str, Entry] = field(default_factory=dict)


class Store:
    """Collections, the global resourceVersion and the event history (see the module)."""

    def __init__(self, history_limit: int | None) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.history_limit = history_limit
        self.version = 1
        self.compacted = 1  # watches from a version below this are expired
        self._history: list[Event] = []
        self._collections: dict[str, Collection] = {}
        self._by_path: dict[str, Collection] = {}
        self._snapshots: OrderedDict[str, tuple[int, list[Entry]]] = OrderedDict()

    # ------------------------------------------------------------------ collections

    def register(
        self, resource: ResourceType, subresources: Mapping[str, SubresourceHandler]
    ) -> None:
        with self.lock:
            collection = Collection(resource, dict(subresources))
            self._collections[resource.plural] = collection
            self._by_path[resource.path] = collection

    def collection(self, resource: str) -> Collection:
        try:
            return self._collections[resource]
        except KeyError:
            raise KeyError(f"no such resource registered: {resource!r}") from None

    def route(self, path: str) -> tuple[Collection | None, str, str]:
        """(collection, object name, subresource) of a request path; None when not served."""
        with self.lock:
            for prefix, collection in self._by_path.items():
                if path == prefix:
                    return collection, "", ""
                if path.startswith(prefix + "/"):
                    rest = path[len(prefix) + 1 :].split("/")
                    if len(rest) == 1:
                        return collection, rest[0], ""
                    if len(rest) == 2:
                        return collection, rest[0], rest[1]
        return None, "", ""

    # ------------------------------------------------------------------ writes by tests

    def add(self, resource: str, obj: Mapping[str, Any]) -> Json:
        with self.lock:
            collection = self.collection(resource)
            stored = copy.deepcopy(dict(obj))
            metadata = stored.setdefault("metadata", {})
            name = metadata.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError("object has no metadata.name")
            if name in collection.entries:
                raise KeyError(f"{resource}/{name} already exists")
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", timestamp())
            return self._store(collection, stored, "ADDED")

    def modify(self, resource: str, obj: Mapping[str, Any]) -> Json:
        with self.lock:
            collection = self.collection(resource)
            new = copy.deepcopy(dict(obj))
            old = self.current(collection, (new.get("metadata") or {}).get("name", ""))
            # Keep what the server owns, like an update that does not send them.
            for key in ("uid", "creationTimestamp"):
                if key in old["metadata"]:
                    new["metadata"].setdefault(key, old["metadata"][key])
            return self._store(collection, new, "MODIFIED")

    def edit(self, resource: str, name: str, edit: Callable[[Json], object]) -> Json:
        with self.lock:
            collection = self.collection(resource)
            current = self.current(collection, name)
            edit(current)
            return self._store(collection, current, "MODIFIED")

    def delete(self, resource: str, name: str) -> None:
        with self.lock:
            collection = self.collection(resource)
            entry = collection.entries.pop(name, None)
            if entry is None:
                raise KeyError(f"{resource}/{name} does not exist")
            obj = json.loads(entry.data)
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._record(
                Event(
                    self.version,
                    collection.type.plural,
                    "DELETED",
                    name,
                    encode(obj),
                    entry.labels,
                    entry.labels,
                )
            )

    def compact(self) -> str:
        with self.lock:
            self.compacted = self.version
            self._history.clear()
            self.changed.notify_all()
            return str(self.compacted)

    def current(self, collection: Collection, name: str) -> Json:
        """A decoded copy of the stored object (KeyError when there is none)."""
        entry = collection.entries.get(name)
        if entry is None:
            raise KeyError(f"{collection.type.plural}/{name} does not exist")
        obj: Json = json.loads(entry.data)
        return obj

    def _store(self, collection: Collection, obj: Json, event_type: str) -> Json:
        self.version += 1
        obj["kind"] = collection.type.kind
        obj["apiVersion"] = collection.type.api_version
        obj["metadata"]["resourceVersion"] = str(self.version)
        name = obj["metadata"]["name"]
        old = collection.entries.get(name)
        entry = Entry(name, _labels_of(obj), encode(obj))
        collection.entries[name] = entry
        left_data = None
        if old is not None and event_type == "MODIFIED" and old.labels != entry.labels:
            previous = json.loads(old.data)
            previous["metadata"]["resourceVersion"] = str(self.version)
            left_data = encode(previous)
        self._record(
            Event(
                self.version,
                collection.type.plural,
                event_type,
                name,
                entry.data,
                entry.labels,
                old.labels if old is not None else None,
                left_data,
            )
        )
        return obj

    def _record(self, event: Event) -> None:
        self._history.append(event)
        if self.history_limit is not None and len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit]
            del self._history[: len(dropped)]
            self.compacted = dropped[-1].version
        self.changed.notify_all()

    # ------------------------------------------------------------------ requests

    def get(self, collection: Collection, name: str, sub: str) -> bytes:
        """GET one object (or a registered subresource of it, which is the object)."""
        with self.lock:
            entry = collection.entries.get(name)
        if entry is None or (sub and sub not in collection.subresources):
            raise ApiStatus(404, "NotFound", f'{collection.type.plural} "{name}" not found')
        return entry.data

    def update(self, collection: Collection, name: str, sub: str, body: Any) -> Json:
        """PUT an object or a subresource: 409 on a stale resourceVersion, as the apiserver."""
        if not isinstance(body, dict) or (body.get("metadata") or {}).get("name") != name:
            raise ApiStatus(400, "BadRequest", "the body's metadata.name does not match the URL")
        with self.lock:
            current = self.current(collection, name) if name in collection.entries else None
            if current is None:
                raise ApiStatus(404, "NotFound", f'{collection.type.plural} "{name}" not found')
            sent = body["metadata"].get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                raise ApiStatus(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {collection.type.plural} "{name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            if sub:
                subresource = collection.subresources.get(sub)
                if subresource is None:
                    raise ApiStatus(404, "NotFound", f"no subresource {sub!r}")
                new = subresource(current, body)
            else:
                new = copy.deepcopy(body)
            new.setdefault("metadata", {})["name"] = name
            for key in ("uid", "creationTimestamp"):
                if key in current["metadata"]:
                    new["metadata"][key] = current["metadata"][key]
            return self._store(collection, new, "MODIFIED")

    def list_page(
        self,
        collection: Collection,
        selector: Selector,
        query: Mapping[str, str],
    ) -> bytes:
        """The encoded `{kind}List` a LIST with this query answers (`limit`, `continue`)."""
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise ApiStatus(400, "BadRequest", "limit must be an integer") from None
        token = query.get("continue")
        with self.lock:
            if token:
                snapshot_id, start = _decode_continue(token)
                snapshot = self._snapshots.get(snapshot_id)
                if snapshot is None or snapshot[0] < self.compacted:
                    raise ApiStatus(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    )
                version, items = snapshot
            else:
                version, start = self.version, 0
                items = self.matching(collection, selector)
                snapshot_id = uuid.uuid4().hex
            end = len(items) if limit <= 0 else min(len(items), start + limit)
            metadata: Json = {"resourceVersion": str(version)}
            if end < len(items):
                self._snapshots[snapshot_id] = (version, items)
                self._snapshots.move_to_end(snapshot_id)
                while len(self._snapshots) > _SNAPSHOTS:
                    self._snapshots.popitem(last=False)
                metadata["continue"] = _encode_continue(snapshot_id, end)
                if not query.get("labelSelector") and not query.get("fieldSelector"):
                    # Like etcd3's store: no count it could not make exact under a selector.
                    metadata["remainingItemCount"] = len(items) - end
            page = items[start:end]
        kind = collection.type
        head = encode({"kind": f"{kind.kind}List", "apiVersion": kind.api_version})[:-1]
        return b"".join(
            (
                head,
                b',"metadata":',
                encode(metadata),
                b',"items":[',
                b",".join(entry.data for entry in page),
                b"]}",
            )
        )

    def matching(self, collection: Collection, selector: Selector) -> list[Entry]:
        """The current objects `selector` selects, by name (call with `lock` held)."""
        return [
            entry
            for name, entry in sorted(collection.entries.items())
            if selector.matches(name, entry.labels)
        ]

    def events_after(self, version: int) -> list[Event]:
        """The history's events newer than `version`, oldest first (call with `lock` held)."""
        start = bisect.bisect_right(self._history, version, key=lambda e: e.version)
        return self._history[start:]


def _labels_of(obj: Json) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _encode_continue(snapshot_id: str, start: int) -> str:
    return base64.urlsafe_b64encode(encode({"s": snapshot_id, "i": start})).decode()


def _decode_continue(token: str) -> tuple[str, int]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(decoded["s"]), int(decoded["i"])
    except (ValueError, KeyError, TypeError):
        raise ApiStatus(400, "BadRequest", "invalid continue token") from None
