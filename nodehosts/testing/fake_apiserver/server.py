"""An in-process fake kube-apiserver that honours the list/watch contract, for tests and the demo.

Contract (what the real apiserver does, see notes/kubernetes.md, and what this fake does):

- One global resourceVersion counter shared by every collection; each write bumps it and records
  an event (ADDED, MODIFIED, DELETED) in one history.
- LIST `GET <collection>` answers `{kind}List` with `metadata.resourceVersion`; `limit` pages
  over a consistent snapshot with `metadata.continue` (+ `remainingItemCount` when there is no
  selector); a continue token older than the last compaction answers HTTP 410 Expired, like etcd.
- `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and `fieldSelector` on
  `metadata.name` (`=`, `==`, `!=`) filter LIST and WATCH; with a selector, a watched object that
  stops matching is sent as DELETED (with its content before the change, at the new version)
  and one that starts matching as ADDED.
- GET one object `GET <collection>/<name>`; PUT `<collection>/<name>` replaces it (409 Conflict
  on a stale `metadata.resourceVersion`); registered subresources answer PUT
  `<collection>/<name>/<subresource>` (see `register`).
- WATCH (`watch=true`) streams newline-delimited JSON events as HTTP/1.1 chunks, from
  `resourceVersion` (absent, "" or "0": synthetic ADDED events for the current objects first),
  with BOOKMARK events when `allowWatchBookmarks=true` (every `bookmark_interval` s, on
  `send_bookmarks()`, and just before a `timeoutSeconds` close), closing cleanly after
  `timeoutSeconds`. The history keeps the newest `history_limit` events (default 1000, like
  a watch cache). A version older than the history answers an ERROR event whose object is a
  Status with code 410 (reason Expired), or HTTP 410 when `expired_as == "http"`. `compact()`
  drops the history; active watches that had not yet sent what was dropped get the 410 too.
- Bearer-token auth when `tokens` is given (revocable at runtime): otherwise 401 Status JSON.
- Faults for the next N matching requests: `fail_next` (any status, e.g. 500, 401, 403),
  `garbage_next` (200 with JSON that does not parse), `drop_next` (connection cut mid-body or
  mid-stream), `end_watches_next` (a watch that ends cleanly at once, as behind a proxy that
  closes streams), `error_event_next` (a watch that sends one ERROR event of any code);
  `drop_watches()` cuts the open watch streams now; `outage()` closes the listening socket and
  every connection (connection refused) until `restore()` reopens the same port.

Extension point: a collection is a `ResourceType` (path prefix, plural, kind); `register()` adds
one, with optional subresource handlers `(current, body) -> new object`. Nodes are registered by
default. Cluster-scoped collections only. Everything is in memory and stdlib-only (plus
`cryptography` for `tls=True`); objects are kept as encoded JSON bytes so large LISTs are cheap.

Also: `make_node()` builds Node JSON (realistic=True: a ~10 KB kubelet-like Node), and
`python -m nodehosts.testing.fake_apiserver --nodes N` serves a cluster until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import copy
import datetime
import hashlib
import ipaddress
import json
import os
import select
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "NODES",
    "ApiStatus",
    "FakeApiServer",
    "RequestRecord",
    "ResourceType",
    "SubresourceHandler",
    "make_node",
]

Json = dict[str, Any]


# --------------------------------------------------------------------------- resource types


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A cluster-scoped collection: where it is served and what its objects are called."""

    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str  # "nodes"; also the key tests use: server.add_object("nodes", ...)
    kind: str  # "Node"
    api_version: str  # "v1" or "<group>/<version>"

    @property
    def path(self) -> str:
        return f"{self.prefix}/{self.plural}"


NODES = ResourceType("/api/v1", "nodes", "Node", "v1")

SubresourceHandler = Callable[[Json, Json], Json]
"""PUT `<collection>/<name>/<sub>`: (current object, request body) -> the object to store.

The server checks a stale `metadata.resourceVersion` in the body (409) before calling, and
sets the new resourceVersion and emits MODIFIED after. Raise `ApiStatus` to refuse.
"""


class ApiStatus(Exception):
    """An API error answered as a Status object (raise it from a subresource handler)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def to_json(self) -> Json:
        return status_object(self.code, self.reason, self.message)


def status_object(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    op: Literal["=", "!=", "in", "notin", "exists", "!exists"]
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        # "!=" and "notin" match objects without the key, like the real apiserver.
        return labels.get(self.key) not in self.values


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def parse_label_selector(text: str) -> tuple[_Requirement, ...]:
    """Parse a labelSelector; raise ApiStatus(400) on syntax the real apiserver rejects."""
    if not text.strip():
        return ()
    requirements = []
    for part in _split_top_level(text):
        if not part:
            raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {text!r}")
        words = part.split()
        if len(words) >= 2 and words[1] in ("in", "notin"):
            rest = part.split(None, 2)[2] if len(part.split(None, 2)) == 3 else ""
            if not (rest.startswith("(") and rest.endswith(")")):
                raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {part!r}")
            values = frozenset(v.strip() for v in rest[1:-1].split(",") if v.strip())
            op: Any = words[1]
            requirements.append(_Requirement(words[0], op, values))
            continue
        for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if token in part:
                key, _, value = part.partition(token)
                requirements.append(_Requirement(key.strip(), op, frozenset({value.strip()})))
                break
        else:
            if part.startswith("!"):
                requirements.append(_Requirement(part[1:].strip(), "!exists"))
            else:
                requirements.append(_Requirement(part, "exists"))
    for requirement in requirements:
        if not requirement.key or any(c in requirement.key for c in " ()!=,"):
            raise ApiStatus(400, "BadRequest", f"invalid label key in selector {text!r}")
    return tuple(requirements)


def parse_field_selector(text: str) -> tuple[_Requirement, ...]:
    """Parse a fieldSelector; only `metadata.name` is a supported field (as for Nodes)."""
    if not text.strip():
        return ()
    requirements = []
    for part in _split_top_level(text):
        for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if token in part:
                key, _, value = part.partition(token)
                key = key.strip()
                if key != "metadata.name":
                    raise ApiStatus(400, "BadRequest", f'field label not supported: "{key}"')
                requirements.append(_Requirement(key, op, frozenset({value.strip()})))
                break
        else:
            raise ApiStatus(400, "BadRequest", f"invalid field selector: {text!r}")
    return tuple(requirements)


@dataclass(frozen=True, slots=True)
class _Selector:
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[_Requirement, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        fields = {"metadata.name": name}
        return all(r.matches(labels) for r in self.labels) and all(
            r.matches(fields) for r in self.fields
        )


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Entry:
    name: str
    labels: Mapping[str, str]
    data: bytes  # the encoded object, resourceVersion included


@dataclass(frozen=True, slots=True)
class _Event:
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
class _Fault:
    kind: Literal["status", "garbage", "drop", "end", "error_event"]
    remaining: int
    verbs: frozenset[str] | None
    status: int = 500
    after_events: int = 0


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the fake saw it, for tests that check how a client talks to the API."""

    verb: str  # list, watch, get, update, or "other"
    path: str
    query: Mapping[str, str]
    token: str | None


@dataclass(eq=False, slots=True)
class _Watch:
    handler: _Handler
    # The server's drop count when the request arrived: a later drop_watches()/outage cuts
    # this watch even if it had not registered yet (no race with a test calling it).
    generation: int
    dropped: bool = False
    bookmark_requested: bool = False


@dataclass(slots=True)
class _Collection:
    type: ResourceType
    subresources: dict[str, SubresourceHandler]
    entries: dict[str, _Entry] = field(default_factory=dict)


def _labels_of(obj: Json) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- the server


class FakeApiServer:
    """A fake kube-apiserver on a loopback address; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] | None = None,
        tls: bool = False,
        history_limit: int | None = 1000,
        bookmark_interval: float = 60.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the fake API server only listens on loopback, not {host}")
        self.host = host
        self.port = port
        self.tls = tls
        # None: no authentication; otherwise the bearer tokens currently accepted.
        self.tokens: set[str] | None = set(tokens) if tokens is not None else None
        # Like the apiserver's watch cache: only the newest events can be replayed, so a
        # long-running demo does not grow without bound. None keeps everything.
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        # How a watch from a compacted version is refused: an ERROR event or HTTP 410.
        self.expired_as: Literal["event", "http"] = "event"
        self.requests: list[RequestRecord] = []
        # BOOKMARK events written to watch streams so far (counted once fully sent).
        self.bookmarks_sent = 0

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 1
        self._compacted = 1  # watches from a version below this are expired
        self._history: list[_Event] = []
        self._collections: dict[str, _Collection] = {}
        self._by_path: dict[str, _Collection] = {}
        self._snapshots: OrderedDict[str, tuple[int, list[_Entry]]] = OrderedDict()
        self._faults: list[_Fault] = []
        self._drops = 0  # drop_watches() and outages so far
        self._watches: set[_Watch] = set()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._ssl_context: ssl.SSLContext | None = None
        self.ca_pem: bytes | None = None
        if tls:
            self._ssl_context, self.ca_pem = _make_tls(host)
        self.register(NODES)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeApiServer:
        with self._lock:
            self._stopped = False
        self._listen()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._changed.notify_all()
        self._close_listener()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("_Server", (_HTTPServer,), {"address_family": family})
        httpd = server_class((self.host, self.port), _Handler)
        httpd.fake = self
        self.port = httpd.server_address[1]
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"fake-apiserver-{self.port}",
            daemon=True,
        )
        self._httpd, self._thread = httpd, thread
        thread.start()

    def _close_listener(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            stopper = threading.Thread(target=httpd.shutdown, daemon=True)
            stopper.start()
            while stopper.is_alive():
                # Wake the accept loop's select() now rather than after its poll interval.
                with contextlib.suppress(OSError):
                    socket.create_connection((self.host, self.port), timeout=0.1).close()
                stopper.join(0.01)
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._cut_connections()

    def _cut_connections(self) -> None:
        with self._lock:
            self._drops += 1
            for watch in self._watches:
                watch.dropped = True
            connections = list(self._connections)
            self._changed.notify_all()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ faults

    def outage(self) -> None:
        """Stop listening and cut every connection: clients get "connection refused"."""
        self._close_listener()

    def restore(self) -> None:
        """End an outage: listen again on the same port."""
        if self._httpd is None and not self._stopped:
            self._listen()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """An outage for the duration of the block."""
        self.outage()
        try:
            yield
        finally:
            self.restore()

    def fail_next(
        self, count: int = 1, *, status: int = 500, verbs: Iterable[str] | None = None
    ) -> None:
        """Answer the next `count` requests (of `verbs`, default any) with a Status error."""
        self._add_fault(_Fault("status", count, _verbs(verbs), status=status))

    def garbage_next(self, count: int = 1, *, verbs: Iterable[str] | None = None) -> None:
        """Answer the next `count` requests with 200 and a body that is not valid JSON."""
        self._add_fault(_Fault("garbage", count, _verbs(verbs)))

    def drop_next(
        self, count: int = 1, *, verbs: Iterable[str] | None = None, after_events: int = 0
    ) -> None:
        """Cut the connection of the next `count` requests mid-body (watches: after N events)."""
        self._add_fault(_Fault("drop", count, _verbs(verbs), after_events=after_events))

    def end_watches_next(self, count: int = 1) -> None:
        """End the next `count` watches cleanly at once, with no event (a proxy in front of the
        API that closes idle streams, like haproxy's `timeout server`)."""
        self._add_fault(_Fault("end", count, frozenset({"watch"})))

    def error_event_next(self, count: int = 1, *, status: int = 500) -> None:
        """Answer the next `count` watches with one ERROR event carrying a Status `status`."""
        self._add_fault(_Fault("error_event", count, frozenset({"watch"}), status=status))

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def drop_watches(self) -> int:
        """Cut every open watch stream now (no clean end); return how many were cut."""
        with self._lock:
            self._drops += 1
            watches = list(self._watches)
            for watch in watches:
                watch.dropped = True
            self._changed.notify_all()
        for watch in watches:
            with contextlib.suppress(OSError):
                watch.handler.connection.shutdown(socket.SHUT_RDWR)
        return len(watches)

    def send_bookmarks(self) -> None:
        """Make every open watch that asked for bookmarks send one now."""
        with self._lock:
            for watch in self._watches:
                watch.bookmark_requested = True
            self._changed.notify_all()

    @property
    def watch_count(self) -> int:
        with self._lock:
            return len(self._watches)

    def _take_fault(self, verb: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.verbs is None or verb in fault.verbs:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------ auth

    def authorize(self, token: str) -> None:
        """Accept `token` from now on (turns authentication on if it was off)."""
        with self._lock:
            self.tokens = (self.tokens or set()) | {token}

    def revoke(self, token: str) -> None:
        """Refuse `token` from the next request on (open watches are not cut, as in k8s)."""
        with self._lock:
            if self.tokens is not None:
                self.tokens.discard(token)

    # ------------------------------------------------------------------ objects

    def register(
        self,
        resource: ResourceType,
        *,
        subresources: Mapping[str, SubresourceHandler] | None = None,
    ) -> None:
        """Serve another cluster-scoped collection (and PUT handlers for its subresources)."""
        with self._lock:
            collection = _Collection(resource, dict(subresources or {}))
            self._collections[resource.plural] = collection
            self._by_path[resource.path] = collection

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        with self._lock:
            return str(self._version)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make several writes (and compactions) appear at once to watchers."""
        with self._lock:
            yield

    def add_object(self, resource: str, obj: Mapping[str, Any]) -> Json:
        """Create an object (ADDED); return it as stored, with its resourceVersion."""
        with self._lock:
            collection = self._collection(resource)
            stored = copy.deepcopy(dict(obj))
            metadata = stored.setdefault("metadata", {})
            name = metadata.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError("object has no metadata.name")
            if name in collection.entries:
                raise KeyError(f"{resource}/{name} already exists")
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", _now())
            return self._store(collection, stored, "ADDED")

    def modify_object(self, resource: str, obj: Mapping[str, Any]) -> Json:
        """Replace the object named by `obj`'s metadata.name (MODIFIED); return it as stored."""
        with self._lock:
            collection = self._collection(resource)
            new = copy.deepcopy(dict(obj))
            old = self._current(collection, (new.get("metadata") or {}).get("name", ""))
            # Keep what the server owns, like an update that does not send them.
            for key in ("uid", "creationTimestamp"):
                if key in old["metadata"]:
                    new["metadata"].setdefault(key, old["metadata"][key])
            return self._store(collection, new, "MODIFIED")

    def edit_object(self, resource: str, name: str, edit: Callable[[Json], object]) -> Json:
        """Edit a copy of the current object in place with `edit(obj)` and store it (MODIFIED)."""
        with self._lock:
            collection = self._collection(resource)
            current = self._current(collection, name)
            edit(current)
            return self._store(collection, current, "MODIFIED")

    def delete_object(self, resource: str, name: str) -> None:
        """Delete an object (DELETED)."""
        with self._lock:
            collection = self._collection(resource)
            entry = collection.entries.pop(name, None)
            if entry is None:
                raise KeyError(f"{resource}/{name} does not exist")
            obj = json.loads(entry.data)
            self._version += 1
            obj["metadata"]["resourceVersion"] = str(self._version)
            self._record(
                _Event(
                    self._version,
                    collection.type.plural,
                    "DELETED",
                    name,
                    _encode(obj),
                    entry.labels,
                    entry.labels,
                )
            )

    def get_object(self, resource: str, name: str) -> Json:
        with self._lock:
            return self._current(self._collection(resource), name)

    def names(self, resource: str = "nodes") -> list[str]:
        with self._lock:
            return sorted(self._collection(resource).entries)

    def heartbeat(self, name: str) -> Json:
        """What a kubelet does every few seconds: only the conditions' heartbeat times move."""

        def beat(node: Json) -> None:
            stamp = _now()
            for condition in (node.get("status") or {}).get("conditions") or []:
                condition["lastHeartbeatTime"] = stamp

        return self.edit_object("nodes", name, beat)

    def compact(self) -> str:
        """Forget the event history (like etcd compaction); return the compacted version.

        Watches from an older version, and open watches that still had events to send from the
        dropped history, get 410 Expired; so do continue tokens of older LISTs.
        """
        with self._lock:
            self._compacted = self._version
            self._history.clear()
            self._changed.notify_all()
            return str(self._compacted)

    def _collection(self, resource: str) -> _Collection:
        try:
            return self._collections[resource]
        except KeyError:
            raise KeyError(f"no such resource registered: {resource!r}") from None

    def _current(self, collection: _Collection, name: str) -> Json:
        entry = collection.entries.get(name)
        if entry is None:
            raise KeyError(f"{collection.type.plural}/{name} does not exist")
        obj: Json = json.loads(entry.data)
        return obj

    def _store(self, collection: _Collection, obj: Json, event_type: str) -> Json:
        self._version += 1
        obj["kind"] = collection.type.kind
        obj["apiVersion"] = collection.type.api_version
        obj["metadata"]["resourceVersion"] = str(self._version)
        name = obj["metadata"]["name"]
        old = collection.entries.get(name)
        entry = _Entry(name, _labels_of(obj), _encode(obj))
        collection.entries[name] = entry
        left_data = None
        if old is not None and event_type == "MODIFIED" and old.labels != entry.labels:
            previous = json.loads(old.data)
            previous["metadata"]["resourceVersion"] = str(self._version)
            left_data = _encode(previous)
        self._record(
            _Event(
                self._version,
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

    def _record(self, event: _Event) -> None:
        self._history.append(event)
        if self.history_limit is not None and len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit]
            del self._history[: len(dropped)]
            self._compacted = dropped[-1].version
        self._changed.notify_all()

    # ------------------------------------------------------------------ kubeconfig

    def write_kubeconfig(self, path: Path | str, *, token: str | None = None) -> Path:
        """Write a kubeconfig for this server that the official client loads (atomically)."""
        cluster: Json = {"server": self.url}
        if self.ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        user: Json = {"token": token} if token is not None else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        target = Path(path)
        # JSON is YAML: no yaml dependency needed. Rename so a reader never sees half a file.
        fd, temp = tempfile.mkstemp(prefix=".kubeconfig-", dir=target.parent)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out, indent=2)
        os.replace(temp, target)
        return target

    # ------------------------------------------------------------------ request handling

    def _handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        token = _bearer(handler.headers.get("Authorization"))
        # Read the body first: a fault answered before it is parsed must not leave it unread.
        body = handler.read_body()
        collection, name, sub = self._route(path)
        verb = _verb(handler.command, collection, name, query)
        with self._lock:
            self.requests.append(RequestRecord(verb, path, query, token))
            tokens = None if self.tokens is None else set(self.tokens)
            generation = self._drops
        fault = self._take_fault(verb)
        if fault is not None and fault.kind == "status":
            reason = _REASONS.get(fault.status, "InternalError")
            handler.send_json(
                fault.status,
                status_object(fault.status, reason, f"injected fault: {reason}"),
            )
            return
        if tokens is not None and token not in tokens:
            handler.send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
            return
        try:
            if path == "/version":
                handler.send_json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake"})
            elif collection is None:
                raise ApiStatus(404, "NotFound", f"the server could not find {path}")
            elif verb == "watch":
                self._serve_watch(handler, collection, query, fault, generation)
            elif fault is not None and fault.kind == "garbage":
                handler.send_bytes(200, b'{"kind":"Status","items":[{"metadata":')
            elif verb == "list":
                handler.send_bytes(200, self._list(collection, query), drop=fault is not None)
            elif verb == "get":
                data = self._get(collection, name, sub)
                handler.send_bytes(200, data, drop=fault is not None)
            elif verb == "update":
                handler.send_json(200, self._update(collection, name, sub, _parse_body(body)))
            else:
                raise ApiStatus(405, "MethodNotAllowed", f"{handler.command} is not supported")
        except ApiStatus as status:
            handler.send_json(status.code, status.to_json())

    def _route(self, path: str) -> tuple[_Collection | None, str, str]:
        with self._lock:
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

    def _get(self, collection: _Collection, name: str, sub: str) -> bytes:
        with self._lock:
            entry = collection.entries.get(name)
        if entry is None or (sub and sub not in collection.subresources):
            raise ApiStatus(404, "NotFound", f'{collection.type.plural} "{name}" not found')
        return entry.data

    def _update(self, collection: _Collection, name: str, sub: str, body: Any) -> Json:
        if not isinstance(body, dict) or (body.get("metadata") or {}).get("name") != name:
            raise ApiStatus(400, "BadRequest", "the body's metadata.name does not match the URL")
        with self._lock:
            current = self._current(collection, name) if name in collection.entries else None
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

    def _list(self, collection: _Collection, query: Mapping[str, str]) -> bytes:
        selector = _Selector(
            parse_label_selector(query.get("labelSelector", "")),
            parse_field_selector(query.get("fieldSelector", "")),
        )
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise ApiStatus(400, "BadRequest", "limit must be an integer") from None
        token = query.get("continue")
        with self._lock:
            if token:
                snapshot_id, start = _decode_continue(token)
                snapshot = self._snapshots.get(snapshot_id)
                if snapshot is None or snapshot[0] < self._compacted:
                    raise ApiStatus(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    )
                version, items = snapshot
            else:
                version, start = self._version, 0
                items = [
                    collection.entries[name]
                    for name in sorted(collection.entries)
                    if selector.matches(name, collection.entries[name].labels)
                ]
                snapshot_id = uuid.uuid4().hex
            end = len(items) if limit <= 0 else min(len(items), start + limit)
            metadata: Json = {"resourceVersion": str(version)}
            if end < len(items):
                self._snapshots[snapshot_id] = (version, items)
                self._snapshots.move_to_end(snapshot_id)
                while len(self._snapshots) > 16:
                    self._snapshots.popitem(last=False)
                metadata["continue"] = _encode_continue(snapshot_id, end)
                if not query.get("labelSelector") and not query.get("fieldSelector"):
                    # Like etcd3's store: no count it could not make exact under a selector.
                    metadata["remainingItemCount"] = len(items) - end
            page = items[start:end]
        kind = collection.type
        head = _encode({"kind": f"{kind.kind}List", "apiVersion": kind.api_version})[:-1]
        return b"".join(
            (
                head,
                b',"metadata":',
                _encode(metadata),
                b',"items":[',
                b",".join(entry.data for entry in page),
                b"]}",
            )
        )

    def _serve_watch(
        self,
        handler: _Handler,
        collection: _Collection,
        query: Mapping[str, str],
        fault: _Fault | None,
        generation: int,
    ) -> None:
        selector = _Selector(
            parse_label_selector(query.get("labelSelector", "")),
            parse_field_selector(query.get("fieldSelector", "")),
        )
        bookmarks = _is_true(query.get("allowWatchBookmarks"))
        try:
            timeout = float(query.get("timeoutSeconds") or self.default_watch_timeout)
            since_text = query.get("resourceVersion", "")
            since = int(since_text) if since_text not in ("", "0") else None
        except ValueError:
            raise ApiStatus(400, "BadRequest", "invalid resourceVersion or timeout") from None
        plural = collection.type.plural
        expired = False
        with self._lock:
            if since is None:
                position = self._version
                initial = [
                    _watch_line("ADDED", entry.data)
                    for name, entry in sorted(collection.entries.items())
                    if selector.matches(name, entry.labels)
                ]
            else:
                position, initial = since, []
                expired = since < self._compacted
        if expired and self.expired_as == "http":
            raise ApiStatus(
                410, "Expired", f"too old resource version: {since} ({self._compacted})"
            )
        handler.start_stream()
        if fault is not None and fault.kind == "garbage":
            handler.send_chunk(b'{"type":"ADDED","object":{"metadata":\n')
            handler.end_stream()
            return
        if fault is not None and fault.kind == "end":
            handler.end_stream()
            return
        if fault is not None and fault.kind == "error_event":
            reason = _REASONS.get(fault.status, "InternalError")
            status = status_object(fault.status, reason, f"injected watch error: {reason}")
            handler.send_chunk(_watch_line("ERROR", _encode(status)))
            handler.end_stream()
            return
        drop_after = fault.after_events if fault is not None and fault.kind == "drop" else None
        watch = _Watch(handler, generation)
        sent = 0
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        with self._lock:
            self._watches.add(watch)
        try:
            pending = initial
            while True:
                if drop_after is not None and sent >= drop_after:
                    handler.cut()
                    return
                for line in pending:
                    if drop_after is not None and sent >= drop_after:
                        handler.cut()
                        return
                    handler.send_chunk(line)
                    sent += 1
                    if line.startswith(b'{"type":"BOOKMARK"'):
                        with self._lock:
                            self.bookmarks_sent += 1
                if expired:
                    handler.send_chunk(_expired_line(position, self._compacted))
                    handler.end_stream()
                    return
                with self._lock:
                    pending, position, expired, finish = self._next_lines(
                        watch,
                        plural,
                        selector,
                        position,
                        deadline=deadline,
                        next_bookmark=next_bookmark,
                        bookmarks=bookmarks,
                    )
                if self._is_dropped(watch):
                    handler.cut()
                    return
                if finish == "idle" and handler.client_gone():
                    return
                if finish == "bookmark" or (finish == "timeout" and bookmarks):
                    pending.append(_bookmark_line(collection.type, position))
                    next_bookmark = time.monotonic() + self.bookmark_interval
                if finish == "timeout":
                    for line in pending:
                        handler.send_chunk(line)
                    handler.end_stream()
                    if bookmarks:
                        with self._lock:
                            self.bookmarks_sent += 1
                    return
        except OSError:
            return  # the client went away
        finally:
            with self._lock:
                self._watches.discard(watch)

    def _is_dropped(self, watch: _Watch) -> bool:
        return watch.dropped or watch.generation != self._drops or self._stopped

    def _next_lines(
        self,
        watch: _Watch,
        plural: str,
        selector: _Selector,
        position: int,
        *,
        deadline: float,
        next_bookmark: float,
        bookmarks: bool,
    ) -> tuple[list[bytes], int, bool, str]:
        """Wait (lock held) for what the watch sends next: lines, new position, expired, why."""
        while True:
            if self._is_dropped(watch):
                return [], position, False, "dropped"
            if position < self._compacted:
                return [], position, True, "expired"
            lines = []
            start = bisect.bisect_right(self._history, position, key=lambda e: e.version)
            for event in self._history[start:]:
                line = _filtered_line(event, plural, selector)
                if line is not None:
                    lines.append(line)
            if start < len(self._history):
                position = self._history[-1].version
            now = time.monotonic()
            if lines:
                return lines, position, False, "events"
            if now >= deadline:
                return [], self._version, False, "timeout"
            if bookmarks and (watch.bookmark_requested or now >= next_bookmark):
                watch.bookmark_requested = False
                return [], self._version, False, "bookmark"
            # Nothing for this watch up to now: it has seen everything up to the current version.
            position = self._version
            wake = deadline if not bookmarks else min(deadline, next_bookmark)
            if wake - now > _IDLE_CHECK:
                # Come back now and then to notice a client that hung up (as the real one does).
                self._changed.wait(_IDLE_CHECK)
                return [], position, False, "idle"
            self._changed.wait(max(0.0, wake - now))


def _parse_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise ApiStatus(400, "BadRequest", "the request body is not JSON") from None


def _is_true(value: str | None) -> bool:
    # Go's strconv.ParseBool, which the apiserver uses: kubernetes 22.6 sends "True".
    return value in ("1", "t", "T", "true", "TRUE", "True")


_IDLE_CHECK = 0.2


def _verbs(verbs: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(verbs) if verbs is not None else None


def _verb(method: str, collection: _Collection | None, name: str, query: Mapping[str, str]) -> str:
    if collection is None:
        return "other"
    if method == "GET":
        if not name:
            return "watch" if _is_true(query.get("watch")) else "list"
        return "get"
    if method == "PUT" and name:
        return "update"
    return "other"


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _encode_continue(snapshot_id: str, start: int) -> str:
    return base64.urlsafe_b64encode(_encode({"s": snapshot_id, "i": start})).decode()


def _decode_continue(token: str) -> tuple[str, int]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(decoded["s"]), int(decoded["i"])
    except (ValueError, KeyError, TypeError):
        raise ApiStatus(400, "BadRequest", "invalid continue token") from None


def _watch_line(event_type: str, data: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + data + b"}\n"


def _bookmark_line(resource: ResourceType, version: int) -> bytes:
    obj = {
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": {"resourceVersion": str(version)},
    }
    return _watch_line("BOOKMARK", _encode(obj))


def _expired_line(since: int, compacted: int) -> bytes:
    status = status_object(410, "Expired", f"too old resource version: {since} ({compacted})")
    return _watch_line("ERROR", _encode(status))


def _filtered_line(event: _Event, plural: str, selector: _Selector) -> bytes | None:
    """The line one watch sees for one event: selectors turn edges into ADDED/DELETED."""
    if event.resource != plural:
        return None
    now = event.type != "DELETED" and selector.matches(event.name, event.labels)
    before = event.old_labels is not None and selector.matches(event.name, event.old_labels)
    if event.type == "DELETED":
        return _watch_line("DELETED", event.data) if before else None
    if now and before:
        return _watch_line("MODIFIED", event.data)
    if now:
        return _watch_line("ADDED", event.data)
    if before:
        return _watch_line("DELETED", event.left_data or event.data)
    return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeApiServer

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.fake._lock:
            self.fake._connections.add(request)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.fake._ssl_context
        if context is None:
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs in the connection's thread, never in the accept loop. The
        # wrapped socket takes over the descriptor: track it instead, so outages can cut it.
        with self.fake._lock:
            self.fake._connections.discard(request)
        try:
            wrapped = context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self.fake._lock:
            self.fake._connections.add(wrapped)
        try:
            super().finish_request(wrapped, client_address)
        finally:
            with self.fake._lock:
                self.fake._connections.discard(wrapped)
            wrapped.close()

    def shutdown_request(self, request: Any) -> None:
        with self.fake._lock:
            self.fake._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-response is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The real apiserver (Go) sets TCP_NODELAY; with Nagle on, a watch event written soon
    # after another waits for the client's delayed ACK (up to 40 ms; bench/dns/change_latency).
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read `FakeApiServer.requests` instead

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, code: int, obj: Any) -> None:
        self.send_bytes(code, _encode(obj))

    def send_bytes(self, code: int, data: bytes, *, drop: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if drop:
            self.wfile.write(data[: len(data) // 2])
            self.cut()
            return
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def client_gone(self) -> bool:
        """True when the client closed its end: a watch client never sends anything else."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def cut(self) -> None:
        """End the connection without a clean end of body: the client sees a broken stream."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- TLS


def _make_tls(host: str) -> tuple[ssl.SSLContext, bytes]:
    """A throw-away CA and a server certificate for localhost/127.0.0.1/::1 (needs cryptography)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-apiserver-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for address in {host, "127.0.0.1", "::1"}:
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    with tempfile.TemporaryDirectory(prefix="fake-apiserver-tls-") as tmp:
        cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
    return context, ca_pem


# --------------------------------------------------------------------------- Node JSON

AddressSpec = Sequence[tuple[str, str]] | Sequence[str]


def make_node(
    name: str,
    *,
    addresses: AddressSpec,
    hostname: str | None = None,
    ready: bool | None = True,
    unschedulable: bool = False,
    labels: Mapping[str, str] | None = None,
    realistic: bool = False,
) -> Json:
    """Node JSON as a kubelet reports it.

    `addresses`: (type, address) pairs, or bare strings meaning InternalIP. A `Hostname` address
    (`hostname`, default the node name; "" for none) is appended unless one is given. `ready`:
    the Ready condition's status (None: no Ready condition). `realistic=True` adds what a real
    kubelet's Node carries (~10 KB: 30 images, managedFields, labels, nodeInfo, conditions with
    heartbeats), deterministic per name, for benchmarks.
    """
    pairs = [("InternalIP", a) if isinstance(a, str) else (a[0], a[1]) for a in addresses]
    if not any(kind == "Hostname" for kind, _ in pairs):
        host = name if hostname is None else hostname
        if host:
            pairs.append(("Hostname", host))
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if realistic:
        all_labels.update(_realistic_labels(name))
    all_labels.update(labels or {})
    conditions = _conditions(ready, realistic)
    node: Json = {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {},
        "status": {
            "addresses": [{"type": kind, "address": value} for kind, value in pairs],
            "conditions": conditions,
        },
    }
    if unschedulable:
        node["spec"]["unschedulable"] = True
        node["spec"]["taints"] = [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        ]
    if realistic:
        _add_realistic_parts(node, name)
    return node


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _conditions(ready: bool | None, realistic: bool) -> list[Json]:
    stamp = _now()
    kinds = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ]
    conditions = []
    if realistic:
        conditions.append(
            {
                "type": "NetworkUnavailable",
                "status": "False",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
                "reason": "CalicoIsUp",
                "message": "Calico is running on this node",
            }
        )
    for kind, status, reason, message in kinds if realistic else []:
        conditions.append(
            {
                "type": kind,
                "status": status,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
                "reason": reason,
                "message": message,
            }
        )
    if ready is not None:
        conditions.append(
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
                "reason": "KubeletReady" if ready else "KubeletNotReady",
                "message": "kubelet is posting ready status"
                if ready
                else "container runtime network not ready",
            }
        )
    return conditions


def _realistic_labels(name: str) -> dict[str, str]:
    return {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "vbox-2c-1g",
        "node.kubernetes.io/role": "worker",
        "topology.kubernetes.io/region": "lab",
        "topology.kubernetes.io/zone": f"lab-{int(_digest(name)[:2], 16) % 3}",
    }


_IMAGES = [
    "docker.io/calico/node:v3.27.3",
    "docker.io/calico/cni:v3.27.3",
    "docker.io/calico/kube-controllers:v3.27.3",
    "registry.k8s.io/kube-proxy:v1.30.2",
    "registry.k8s.io/pause:3.9",
    "registry.k8s.io/coredns/coredns:v1.11.1",
    "registry.k8s.io/metrics-server/metrics-server:v0.7.1",
    "registry.k8s.io/ingress-nginx/controller:v1.10.1",
    "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.10.1",
    "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
    "quay.io/prometheus/node-exporter:v1.8.1",
    "quay.io/prometheus/prometheus:v2.53.0",
    "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0",
    "docker.io/grafana/grafana:11.1.0",
    "docker.io/grafana/promtail:3.0.0",
    "docker.io/grafana/loki:3.0.0",
    "docker.io/library/nginx:1.27.0",
    "docker.io/library/redis:7.2.5",
    "docker.io/library/postgres:16.3",
    "docker.io/library/busybox:1.36.1",
    "docker.io/library/alpine:3.20.1",
    "docker.io/bitnami/kubectl:1.30.2",
    "ghcr.io/fluxcd/source-controller:v1.3.0",
    "ghcr.io/fluxcd/kustomize-controller:v1.3.0",
    "ghcr.io/fluxcd/helm-controller:v1.0.1",
    "quay.io/jetstack/cert-manager-controller:v1.15.1",
    "quay.io/jetstack/cert-manager-webhook:v1.15.1",
    "quay.io/jetstack/cert-manager-cainjector:v1.15.1",
    "docker.io/traefik:v3.0.4",
    "docker.io/rancher/local-path-provisioner:v0.0.28",
]


def _first_address(node: Json) -> str:
    for address in node["status"]["addresses"]:
        if address["type"] == "InternalIP":
            return str(address["address"])
    return "10.240.0.1"


def _add_realistic_parts(node: Json, name: str) -> None:
    metadata, spec, status = node["metadata"], node["spec"], node["status"]
    index = int(_digest(name)[:4], 16) % 250
    stamp = _now()
    metadata["uid"] = str(uuid.UUID(_digest("uid", name)[:32]))
    metadata["creationTimestamp"] = "2024-06-01T10:00:00Z"
    metadata["annotations"] = {
        "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
        "node.alpha.kubernetes.io/ttl": "0",
        "projectcalico.org/IPv4Address": f"{_first_address(node)}/24",
        "projectcalico.org/IPv4IPIPTunnelAddr": f"10.200.{index}.0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    spec["podCIDR"] = f"10.200.{index}.0/24"
    spec["podCIDRs"] = [f"10.200.{index}.0/24"]
    spec["providerID"] = f"vbox://{_digest('vm', name)[:36]}"
    resources = {
        "cpu": "2",
        "ephemeral-storage": "40901312Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "1004852Ki",
        "pods": "110",
    }
    status["capacity"] = resources
    status["allocatable"] = {**resources, "ephemeral-storage": "37694649077", "memory": "902452Ki"}
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
    status["nodeInfo"] = {
        "machineID": _digest("machine", name)[:32],
        "systemUUID": str(uuid.UUID(_digest("system", name)[:32])),
        "bootID": str(uuid.UUID(_digest("boot", name)[:32])),
        "kernelVersion": "6.1.0-21-amd64",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "containerRuntimeVersion": "containerd://1.7.18",
        "kubeletVersion": "v1.30.2",
        "kubeProxyVersion": "v1.30.2",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
    status["images"] = [
        {
            "names": [f"{image.split(':')[0]}@sha256:{_digest(image)}", image],
            "sizeBytes": 1_000_000 + int(_digest("size", image)[:7], 16),
        }
        for image in _IMAGES
    ]
    status["volumesInUse"] = []
    metadata["managedFields"] = [
        {
            "manager": "kubeadm",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-06-01T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {
                        "f:kubeadm.alpha.kubernetes.io/cri-socket": {},
                        "f:node.alpha.kubernetes.io/ttl": {},
                    }
                }
            },
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-06-01T10:00:10Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:spec": {"f:podCIDR": {}, "f:podCIDRs": {".": {}, f'v:"{spec["podCIDR"]}"': {}}}
            },
        },
        {
            "manager": "calico-node",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-06-01T10:01:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {
                        "f:projectcalico.org/IPv4Address": {},
                        "f:projectcalico.org/IPv4IPIPTunnelAddr": {},
                    }
                },
                "f:status": {"f:conditions": {'k:{"type":"NetworkUnavailable"}': {".": {}}}},
            },
            "subresource": "status",
        },
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": stamp,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {
                        ".": {},
                        "f:volumes.kubernetes.io/controller-managed-attach-detach": {},
                    },
                    "f:labels": {".": {}, **{f"f:{k}": {} for k in sorted(metadata["labels"])}},
                },
                "f:spec": {"f:providerID": {}},
                "f:status": {
                    "f:allocatable": {f"f:{k}": {} for k in sorted(resources)},
                    "f:capacity": {f"f:{k}": {} for k in sorted(resources)},
                    "f:conditions": {
                        f'k:{{"type":"{c["type"]}"}}': {
                            ".": {},
                            "f:lastHeartbeatTime": {},
                            "f:lastTransitionTime": {},
                            "f:message": {},
                            "f:reason": {},
                            "f:status": {},
                            "f:type": {},
                        }
                        for c in status["conditions"]
                    },
                    "f:daemonEndpoints": {"f:kubeletEndpoint": {"f:Port": {}}},
                    "f:images": {},
                    "f:nodeInfo": {f"f:{k}": {} for k in sorted(status["nodeInfo"])},
                },
            },
            "subresource": "status",
        },
    ]


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake cluster of N nodes until interrupted (for benchmarks and manual tests)."""
    parser = argparse.ArgumentParser(prog="python -m nodehosts.testing.fake_apiserver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--realistic", action="store_true", help="~10 KB kubelet-like Nodes")
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig here")
    args = parser.parse_args(argv)
    server = FakeApiServer(
        host=args.host,
        port=args.port,
        tokens=[args.token] if args.token else None,
        tls=args.tls,
        history_limit=10_000,
    )
    for i in range(args.nodes):
        address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        server.add_object(
            "nodes", make_node(f"node-{i:05d}", addresses=[address], realistic=args.realistic)
        )
    with server:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig, token=args.token)
        print(f"serving {args.nodes} nodes at {server.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
