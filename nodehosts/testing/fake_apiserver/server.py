"""FakeApiServer: a fake kube-apiserver on loopback (the contract is the package's docstring).

This module holds what ties the parts together: lifecycle (listen, outage, restore, stop), the
connections and open watches it can cut, bearer-token auth, the request log, and the dispatch
of each request to the store, a watch stream or an injected fault.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from nodehosts.testing.fake_apiserver.api import (
    NODES,
    REASONS,
    ApiStatus,
    Json,
    ResourceType,
    SubresourceHandler,
    status_object,
)
from nodehosts.testing.fake_apiserver.faults import Fault, FaultInjection
from nodehosts.testing.fake_apiserver.http import (
    Handler,
    HTTPServer,
    bearer,
    parse_body,
    verb_of,
)
from nodehosts.testing.fake_apiserver.selectors import parse_selector
from nodehosts.testing.fake_apiserver.store import Store
from nodehosts.testing.fake_apiserver.tls import make_tls
from nodehosts.testing.fake_apiserver.watch import Watch, serve_watch
from nodehosts.testing.objects import timestamp

__all__ = ["FakeApiServer", "RequestRecord"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the fake saw it, for tests that check how a client talks to the API."""

    verb: str  # list, watch, get, update, or "other"
    path: str
    query: Mapping[str, str]
    token: str | None


class FakeApiServer(FaultInjection):
    """A fake kube-apiserver on a loopback address; see the package docstring for the contract."""

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
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        # How a watch from a compacted version is refused: an ERROR event or HTTP 410.
        self.expired_as: Literal["event", "http"] = "event"
        self.requests: list[RequestRecord] = []
        # BOOKMARK events written to watch streams so far (counted once fully sent).
        self.bookmarks_sent = 0

        # Like the apiserver's watch cache: only the newest `history_limit` events can be
        # replayed, so a long-running demo does not grow without bound. None keeps everything.
        self.store = Store(history_limit)
        # One lock for the store and the server's own state below.
        self._lock = self.store.lock
        self._faults: list[Fault] = []
        self._drops = 0  # drop_watches() and outages so far
        self._watches: set[Watch] = set()
        self._connections: set[socket.socket] = set()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._ssl_context: ssl.SSLContext | None = None
        self.ca_pem: bytes | None = None
        if tls:
            self._ssl_context, self.ca_pem = make_tls(host)
        self.register(NODES)

    @property
    def history_limit(self) -> int | None:
        return self.store.history_limit

    @history_limit.setter
    def history_limit(self, limit: int | None) -> None:
        self.store.history_limit = limit

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeApiServer:
        with self._lock:
            self._stopped = False
        self._listen()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self.store.changed.notify_all()
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
        server_class = type("_Server", (HTTPServer,), {"address_family": family})
        httpd = server_class((self.host, self.port), Handler)
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
            self.store.changed.notify_all()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ faults on what is open

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

    def drop_watches(self) -> int:
        """Cut every open watch stream now (no clean end); return how many were cut."""
        with self._lock:
            self._drops += 1
            watches = list(self._watches)
            for watch in watches:
                watch.dropped = True
            self.store.changed.notify_all()
        for watch in watches:
            with contextlib.suppress(OSError):
                watch.handler.connection.shutdown(socket.SHUT_RDWR)
        return len(watches)

    def send_bookmarks(self) -> None:
        """Make every open watch that asked for bookmarks send one now."""
        with self._lock:
            for watch in self._watches:
                watch.bookmark_requested = True
            self.store.changed.notify_all()

    @property
    def watch_count(self) -> int:
        with self._lock:
            return len(self._watches)

    def _is_dropped(self, watch: Watch) -> bool:
        return watch.dropped or watch.generation != self._drops or self._stopped

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
        self.store.register(resource, subresources or {})

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        with self._lock:
            return str(self.store.version)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make several writes (and compactions) appear at once to watchers."""
        with self._lock:
            yield

    def add_object(self, resource: str, obj: Mapping[str, Any]) -> Json:
        """Create an object (ADDED); return it as stored, with its resourceVersion."""
        return self.store.add(resource, obj)

    def modify_object(self, resource: str, obj: Mapping[str, Any]) -> Json:
        """Replace the object named by `obj`'s metadata.name (MODIFIED); return it as stored."""
        return self.store.modify(resource, obj)

    def edit_object(self, resource: str, name: str, edit: Callable[[Json], object]) -> Json:
        """Edit a copy of the current object in place with `edit(obj)` and store it (MODIFIED)."""
        return self.store.edit(resource, name, edit)

    def delete_object(self, resource: str, name: str) -> None:
        """Delete an object (DELETED)."""
        self.store.delete(resource, name)

    def get_object(self, resource: str, name: str) -> Json:
        with self._lock:
            return self.store.current(self.store.collection(resource), name)

    def names(self, resource: str = "nodes") -> list[str]:
        with self._lock:
            return sorted(self.store.collection(resource).entries)

    def heartbeat(self, name: str) -> Json:
        """What a kubelet does every few seconds: only the conditions' heartbeat times move."""

        def beat(node: Json) -> None:
            stamp = timestamp()
            for condition in (node.get("status") or {}).get("conditions") or []:
                condition["lastHeartbeatTime"] = stamp

        return self.edit_object("nodes", name, beat)

    def compact(self) -> str:
        """Forget the event history (like etcd compaction); return the compacted version.

        Watches from an older version, and open watches that still had events to send from the
        dropped history, get 410 Expired; so do continue tokens of older LISTs.
        """
        return self.store.compact()

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

    def _handle(self, handler: Handler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        token = bearer(handler.headers.get("Authorization"))
        # Read the body first: a fault answered before it is parsed must not leave it unread.
        body = handler.read_body()
        collection, name, sub = self.store.route(path)
        verb = verb_of(handler.command, collection is not None, name, query)
        with self._lock:
            self.requests.append(RequestRecord(verb, path, query, token))
            tokens = None if self.tokens is None else set(self.tokens)
            generation = self._drops
        fault = self._take_fault(verb)
        if fault is not None and fault.kind == "status":
            reason = REASONS.get(fault.status, "InternalError")
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
                serve_watch(self, handler, collection, query, fault=fault, generation=generation)
            elif fault is not None and fault.kind == "garbage":
                handler.send_bytes(200, b'{"kind":"Status","items":[{"metadata":')
            elif verb == "list":
                page = self.store.list_page(collection, parse_selector(query), query)
                handler.send_bytes(200, page, drop=fault is not None)
            elif verb == "get":
                data = self.store.get(collection, name, sub)
                handler.send_bytes(200, data, drop=fault is not None)
            elif verb == "update":
                handler.send_json(200, self.store.update(collection, name, sub, parse_body(body)))
            else:
                raise ApiStatus(405, "MethodNotAllowed", f"{handler.command} is not supported")
        except ApiStatus as status:
            handler.send_json(status.code, status.to_json())
