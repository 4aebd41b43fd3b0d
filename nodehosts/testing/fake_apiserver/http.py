"""HTTP/1.1 for the fake API server: threads per connection, JSON bodies, chunked watches.

Contract: `HTTPServer` runs one thread per connection and tracks every open connection on its
`FakeApiServer` (TLS ones once wrapped, the handshake in the connection's thread), so outages
can cut them; every request goes to `FakeApiServer._handle`. `Handler` offers what a response
needs: whole JSON bodies (optionally cut halfway), chunked streams, `cut()` (no clean end) and
`client_gone()`. Nagle is off, as in the Go apiserver (bench/ may turn it back on).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from nodehosts.testing.fake_apiserver.api import ApiStatus, encode

if TYPE_CHECKING:
    from nodehosts.testing.fake_apiserver.server import FakeApiServer

__all__ = ["HTTPServer", "Handler", "bearer", "is_true", "parse_body", "verb_of"]


class HTTPServer(ThreadingHTTPServer):
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The real apiserver (Go) sets TCP_NODELAY; with Nagle on, a watch event written soon
    # after another waits for the client's delayed ACK (up to 40 ms; bench/dns/change_latency).
    disable_nagle_algorithm = True
    server: HTTPServer

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read `FakeApiServer.requests` instead

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, code: int, obj: Any) -> None:
        self.send_bytes(code, encode(obj))

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


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise ApiStatus(400, "BadRequest", "the request body is not JSON") from None


def is_true(value: str | None) -> bool:
    # Go's strconv.ParseBool, which the apiserver uses: kubernetes 22.6 sends "True".
    return value in ("1", "t", "T", "true", "TRUE", "True")


def verb_of(method: str, routed: bool, name: str, query: Mapping[str, str]) -> str:
    """The API verb of a request: list, watch, get, update, or "other"."""
    if not routed:
        return "other"
    if method == "GET":
        if not name:
            return "watch" if is_true(query.get("watch")) else "list"
        return "get"
    if method == "PUT" and name:
        return "update"
    return "other"


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
