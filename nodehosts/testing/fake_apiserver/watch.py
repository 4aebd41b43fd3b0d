"""One WATCH request, served: initial ADDED events, the history through the selector, bookmarks.

Contract: `serve_watch` streams newline-delimited JSON events as HTTP/1.1 chunks from the
request's `resourceVersion` (absent, "" or "0": synthetic ADDED events for the current objects
first). A selector turns edges into ADDED/DELETED: an object that stops matching is sent as
DELETED (its content before the change, at the new version), one that starts matching as ADDED.
BOOKMARKs when asked for (`allowWatchBookmarks`): every `bookmark_interval` s, on
`send_bookmarks()`, and just before the `timeoutSeconds` close. A version older than the history
ends with an ERROR event (410 Expired), or HTTP 410 when `expired_as == "http"`. A watch the
server drops (`drop_watches`, an outage, `stop`) is cut without a clean end; one whose client
hung up ends within `_IDLE_CHECK` s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodehosts.testing.fake_apiserver.api import (
    REASONS,
    ApiStatus,
    ResourceType,
    encode,
    status_object,
)
from nodehosts.testing.fake_apiserver.faults import Fault
from nodehosts.testing.fake_apiserver.http import Handler, is_true
from nodehosts.testing.fake_apiserver.selectors import Selector, parse_selector
from nodehosts.testing.fake_apiserver.store import Collection, Event

if TYPE_CHECKING:
    from nodehosts.testing.fake_apiserver.server import FakeApiServer

__all__ = ["Watch", "serve_watch"]

# How often an idle watch looks whether its client hung up (as the real one notices).
_IDLE_CHECK = 0.2


@dataclass(eq=False, slots=True)
class Watch:
    handler: Handler
    # The server's drop count when the request arrived: a later drop_watches()/outage cuts
    # this watch even if it had not registered yet (no race with a test calling it).
    generation: int
    dropped: bool = False
    bookmark_requested: bool = False


def serve_watch(
    server: FakeApiServer,
    handler: Handler,
    collection: Collection,
    query: Mapping[str, str],
    *,
    fault: Fault | None,
    generation: int,
) -> None:
    """Answer one WATCH request on `handler` until it ends, times out or is cut."""
    store = server.store
    selector = parse_selector(query)
    bookmarks = is_true(query.get("allowWatchBookmarks"))
    try:
        timeout = float(query.get("timeoutSeconds") or server.default_watch_timeout)
        since_text = query.get("resourceVersion", "")
        since = int(since_text) if since_text not in ("", "0") else None
    except ValueError:
        raise ApiStatus(400, "BadRequest", "invalid resourceVersion or timeout") from None
    plural = collection.type.plural
    expired = False
    with store.lock:
        if since is None:
            position = store.version
            initial = [
                watch_line("ADDED", entry.data) for entry in store.matching(collection, selector)
            ]
        else:
            position, initial = since, []
            expired = since < store.compacted
    if expired and server.expired_as == "http":
        raise ApiStatus(410, "Expired", f"too old resource version: {since} ({store.compacted})")
    handler.start_stream()
    if fault is not None and fault.kind == "garbage":
        handler.send_chunk(b'{"type":"ADDED","object":{"metadata":\n')
        handler.end_stream()
        return
    if fault is not None and fault.kind == "end":
        handler.end_stream()
        return
    if fault is not None and fault.kind == "error_event":
        reason = REASONS.get(fault.status, "InternalError")
        status = status_object(fault.status, reason, f"injected watch error: {reason}")
        handler.send_chunk(watch_line("ERROR", encode(status)))
        handler.end_stream()
        return
    drop_after = fault.after_events if fault is not None and fault.kind == "drop" else None
    watch = Watch(handler, generation)
    sent = 0
    deadline = time.monotonic() + timeout
    next_bookmark = time.monotonic() + server.bookmark_interval
    with store.lock:
        server._watches.add(watch)
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
                    with store.lock:
                        server.bookmarks_sent += 1
            if expired:
                handler.send_chunk(_expired_line(position, store.compacted))
                handler.end_stream()
                return
            with store.lock:
                pending, position, expired, finish = _next_lines(
                    server,
                    watch,
                    plural,
                    selector,
                    position,
                    deadline=deadline,
                    next_bookmark=next_bookmark,
                    bookmarks=bookmarks,
                )
            if server._is_dropped(watch):
                handler.cut()
                return
            if finish == "idle" and handler.client_gone():
                return
            if finish == "bookmark" or (finish == "timeout" and bookmarks):
                pending.append(_bookmark_line(collection.type, position))
                next_bookmark = time.monotonic() + server.bookmark_interval
            if finish == "timeout":
                for line in pending:
                    handler.send_chunk(line)
                handler.end_stream()
                if bookmarks:
                    with store.lock:
                        server.bookmarks_sent += 1
                return
    except OSError:
        return  # the client went away
    finally:
        with store.lock:
            server._watches.discard(watch)


def _next_lines(
    server: FakeApiServer,
    watch: Watch,
    plural: str,
    selector: Selector,
    position: int,
    *,
    deadline: float,
    next_bookmark: float,
    bookmarks: bool,
) -> tuple[list[bytes], int, bool, str]:
    """Wait (lock held) for what the watch sends next: lines, new position, expired, why."""
    store = server.store
    while True:
        if server._is_dropped(watch):
            return [], position, False, "dropped"
        if position < store.compacted:
            return [], position, True, "expired"
        lines = []
        events = store.events_after(position)
        for event in events:
            line = _filtered_line(event, plural, selector)
            if line is not None:
                lines.append(line)
        if events:
            position = events[-1].version
        now = time.monotonic()
        if lines:
            return lines, position, False, "events"
        if now >= deadline:
            return [], store.version, False, "timeout"
        if bookmarks and (watch.bookmark_requested or now >= next_bookmark):
            watch.bookmark_requested = False
            return [], store.version, False, "bookmark"
        # Nothing for this watch up to now: it has seen everything up to the current version.
        position = store.version
        wake = deadline if not bookmarks else min(deadline, next_bookmark)
        if wake - now > _IDLE_CHECK:
            # Come back now and then to notice a client that hung up (as the real one does).
            store.changed.wait(_IDLE_CHECK)
            return [], position, False, "idle"
        store.changed.wait(max(0.0, wake - now))


def watch_line(event_type: str, data: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + data + b"}\n"


def _bookmark_line(resource: ResourceType, version: int) -> bytes:
    obj = {
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": {"resourceVersion": str(version)},
    }
    return watch_line("BOOKMARK", encode(obj))


def _expired_line(since: int, compacted: int) -> bytes:
    status = status_object(410, "Expired", f"too old resource version: {since} ({compacted})")
    return watch_line("ERROR", encode(status))


def _filtered_line(event: Event, plural: str, selector: Selector) -> bytes | None:
    """The line one watch sees for one event: selectors turn edges into ADDED/DELETED."""
    if event.resource != plural:
        return None
    now = event.type != "DELETED" and selector.matches(event.name, event.labels)
    before = event.old_labels is not None and selector.matches(event.name, event.old_labels)
    if event.type == "DELETED":
        return watch_line("DELETED", event.data) if before else None
    if now and before:
        return watch_line("MODIFIED", event.data)
    if now:
        return watch_line("ADDED", event.data)
    if before:
        return watch_line("DELETED", event.left_data or event.data)
    return None
