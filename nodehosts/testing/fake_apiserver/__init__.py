"""An in-process fake kube-apiserver that honours the list/watch contract, for tests and the demo.

Contract (what the real apiserver does, and what this fake does):

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

Where each part lives: `server` (FakeApiServer: lifecycle, auth, connections, request dispatch),
`store` (objects, resourceVersions, history, LIST pages), `watch` (one WATCH stream), `selectors`,
`faults` (the `*_next` queue), `http` (the HTTP/1.1 transport), `tls`, `api` (ResourceType,
ApiStatus). `make_node()` (from nodehosts.testing.objects) builds Node JSON (realistic=True: a
~10 KB kubelet-like Node); `python -m nodehosts.testing.fake_apiserver --nodes N` serves a
cluster until interrupted.
"""

from nodehosts.testing.fake_apiserver.api import (
    NODES,
    ApiStatus,
    ResourceType,
    SubresourceHandler,
)
from nodehosts.testing.fake_apiserver.http import Handler
from nodehosts.testing.fake_apiserver.server import FakeApiServer, RequestRecord
from nodehosts.testing.objects import make_node

# bench/ sets `fake_apiserver._Handler.disable_nagle_algorithm` (the old module's name for it).
_Handler = Handler

__all__ = [
    "NODES",
    "ApiStatus",
    "FakeApiServer",
    "RequestRecord",
    "ResourceType",
    "SubresourceHandler",
    "make_node",
]
