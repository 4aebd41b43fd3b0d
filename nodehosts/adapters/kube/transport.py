"""HTTP to the API server with the official client's settings, and who holds that transport.

Contract:

- `KubeTransport(configuration)` sends requests with the official client's TLS, client
  certificate, proxy and credential settings: only the urllib3 pool `ApiClient` would use
  (`RESTClientObject`, via `leanimport`), with credentials from `auth_settings()` per request
  (so refreshed tokens are picked up). No API classes, no models: bodies are raw bytes or JSON.
  Every failure is a `KubeApiError` (`transport_error` names the network ones: unreachable,
  timeout, tls_error, connection_lost); a body read whole stops at `max_body_bytes`
  ("response_too_large"). `interrupt()`, from any thread, fails every read in progress
  promptly (the socket is shut down) and every later request.
- `ClientHolder(configure)` is the transport of one user (the list/watch thread, the CSR
  approver): built from `configure()` on first use, dropped (closed) by `drop()` or by
  `failed(error)` when the error says the credentials are bad (401, 403, config_error), so
  the next request rebuilds it from the files as they are then. Thread-safe; the
  configuration is loaded outside its lock (an exec credential plugin may take seconds), and
  a transport built from a configuration loaded before a `drop()` is never kept.
- `Backoff(base, cap, rng, floor=0)`: attempt n waits uniform(floor, min(cap, base * 2**n))
  ("full jitter" with floor 0: the retries of many clients spread out).
- `object_path(collection, name, subresource)` is the URL path of one object.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from nodehosts import __version__
from nodehosts.adapters.kube.config import KubeConfigError
from nodehosts.adapters.kube.errors import KubeApiError, describe, status_error
from nodehosts.adapters.kube.leanimport import new_pool_manager
from nodehosts.adapters.kube.listjson import CHUNK_BYTES, MAX_PAGE_BYTES
from nodehosts.runtime import gc_paused

if TYPE_CHECKING:
    from kubernetes.client import Configuration
    from urllib3 import BaseHTTPResponse  # urllib3 2.x; 1.26 (bookworm) has HTTPResponse alone

__all__ = [
    "Backoff",
    "ClientHolder",
    "KubeTransport",
    "network_errors",
    "object_path",
    "transport_error",
]


def transport_error(error: BaseException, where: str) -> KubeApiError:
    from urllib3 import exceptions

    if isinstance(error, KubeApiError):
        return error
    if isinstance(error, exceptions.NewConnectionError):
        reason = "unreachable"
    elif isinstance(error, exceptions.TimeoutError):
        reason = "timeout"
    elif isinstance(error, exceptions.SSLError):
        reason = "tls_error"
    else:
        reason = "connection_lost"
    # urllib3 wraps the cause in a tuple or a long repr; keep the part an operator reads.
    first = error.args[0] if error.args else None
    text = first if isinstance(first, str) else str(error)
    text = text.rpartition("Failed to establish a new connection: ")[2]
    return KubeApiError(reason, f"{where}: {text.strip() or type(error).__name__}"[:300])


# Exceptions a request or a body read can raise for network reasons.
def network_errors() -> tuple[type[BaseException], ...]:
    from urllib3 import exceptions

    return (exceptions.HTTPError, OSError, http.client.HTTPException, ValueError)


class KubeTransport:
    """HTTP to the API server with the official client's TLS, proxy and credential settings."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_body_bytes: int | None = None,
    ) -> None:
        self._configuration = configuration
        # A body read whole (a LIST page, an error Status) stops at this size.
        self.max_body_bytes = MAX_PAGE_BYTES if max_body_bytes is None else max_body_bytes
        # Only the pool ApiClient would use: the API classes and models are never touched
        # (import cost and RSS, and ApiClient.call_api's signature differs in 22.6 and 37.x).
        self._pool = new_pool_manager(configuration)
        self.base = str(configuration.host).rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._open_responses: set[BaseHTTPResponse] = set()
        self._interrupted = False

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"nodehosts/{__version__}"}
        try:
            # Called per request: the token refresh hooks (in-cluster, exec) run in here.
            # The client's (37.x: typed as a dict of object) {name: {in, key, value, ...}}.
            settings: Mapping[str, Any] = self._configuration.auth_settings()
        except Exception as error:
            raise KubeApiError("config_error", f"credentials: {describe(error)}") from error
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"])] = str(setting["value"])
        return headers

    def open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        read_timeout: float | None = None,
    ) -> BaseHTTPResponse:
        """Send a request; return the streaming urllib3 response (status not checked)."""
        import urllib3

        with self._lock:
            if self._interrupted:
                raise KubeApiError("interrupted", "the source is stopping or restarting")
        url = self.base + path + ("?" + urlencode(query) if query else "")
        headers = self.headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        timeout = urllib3.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout if read_timeout is None else read_timeout,
        )
        try:
            response = self._pool.request(
                method,
                url,
                body=data,
                headers=headers,
                timeout=timeout,
                retries=False,  # we retry with our own backoff, and log each failure
                preload_content=False,
            )
        except network_errors() as error:
            raise transport_error(error, self.base) from error
        with self._lock:
            self._open_responses.add(response)
            interrupted = self._interrupted
        if interrupted:  # interrupt() ran while we were connecting
            _shutdown_socket(response)
        return response

    def finish(self, response: BaseHTTPResponse, *, reuse: bool) -> None:
        """Give a response's connection back (reuse) or close it (after an error)."""
        with self._lock:
            self._open_responses.discard(response)
        with contextlib.suppress(Exception):
            if not reuse:
                response.close()
            response.release_conn()

    def read(self, response: BaseHTTPResponse) -> bytes:
        """The whole body of a response, at most `max_body_bytes` (else KubeApiError
        "response_too_large", before reading more); network failures become KubeApiError."""
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.stream(CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > limit:
                    raise KubeApiError(
                        "response_too_large",
                        f"{self.base}: response body larger than {limit} bytes"
                        " (kubernetes.max_page_bytes)",
                    )
                chunks.append(chunk)
        except network_errors() as error:
            raise transport_error(error, self.base) from error
        # urllib3 1.26 (bookworm) returns a body cut short as if it were whole when read in
        # chunks; what Content-Length still promised tells.
        remaining = getattr(response, "length_remaining", None)
        if remaining:
            raise KubeApiError(
                "connection_lost", f"{self.base}: the body ended {remaining} bytes early"
            )
        return b"".join(chunks)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """One request whose 2xx answer is JSON; anything else raises KubeApiError."""
        data = self.request_bytes(method, path, query=query, body=body)
        with gc_paused():  # decoding big JSON: the cyclic gc rescans every new dict
            try:
                return json.loads(data)
            except ValueError as error:
                raise KubeApiError("bad_response", f"{path}: not JSON: {error}") from error
            except RecursionError:
                raise KubeApiError("bad_response", f"{path}: nested too deeply") from None

    def request_bytes(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> bytes:
        """One request; the body of a 2xx answer, else KubeApiError."""
        response = self.open(method, path, query=query, body=body)
        reuse = False
        try:
            data = self.read(response)
            reuse = True
        finally:
            self.finish(response, reuse=reuse)
        if not 200 <= response.status < 300:
            raise status_error(response.status, data)
        return data

    def interrupt(self) -> None:
        """From any thread: fail every read in progress promptly, and every later request."""
        with self._lock:
            self._interrupted = True
            responses = list(self._open_responses)
        for response in responses:
            _shutdown_socket(response)

    def close(self) -> None:
        self.interrupt()
        with contextlib.suppress(Exception):
            self._pool.clear()


def _shutdown_socket(response: BaseHTTPResponse) -> None:
    # urllib3 1.26 and 2.x both keep the connection of an unreleased streaming response here;
    # shutting the socket down wakes a recv() blocked in another thread.
    connection = getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            sock.shutdown(socket.SHUT_RDWR)


class ClientHolder:
    """The current KubeTransport of one user, rebuilt after bad credentials or `drop()`."""

    def __init__(
        self,
        configure: Callable[[], Configuration],
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_body_bytes: int | None = None,
    ) -> None:
        self._configure = configure
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._transport: KubeTransport | None = None
        self._generation = 0  # counts drops: a build that straddles one is not kept

    def current(self) -> KubeTransport:
        """The transport, built now if there is none; a configuration error is a KubeApiError
        "config_error"."""
        while True:
            with self._lock:
                if self._transport is not None:
                    return self._transport
                generation = self._generation
            try:
                configuration = self._configure()
            except KubeConfigError as error:
                raise KubeApiError("config_error", str(error)) from error
            transport = KubeTransport(
                configuration,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                max_body_bytes=self._max_body_bytes,
            )
            with self._lock:
                if self._generation == generation:
                    if self._transport is None:
                        self._transport = transport
                        return transport
                    kept: KubeTransport | None = self._transport  # another thread was first
                else:
                    kept = None  # dropped meanwhile: build again from the files as they are now
            transport.close()
            if kept is not None:
                return kept

    def drop(self) -> None:
        """Close the transport (failing its reads in progress); the next request rebuilds it."""
        with self._lock:
            transport, self._transport = self._transport, None
            self._generation += 1
        if transport is not None:
            transport.close()

    def interrupt(self) -> None:
        """Fail the current transport's reads in progress and later requests, from any thread
        (the user then drops it or stops)."""
        with self._lock:
            transport = self._transport
        if transport is not None:
            transport.interrupt()

    def failed(self, error: KubeApiError) -> None:
        """A request failed: if for the credentials (401, 403, config), rebuild before the next."""
        if error.status in (401, 403) or error.reason == "config_error":
            self.drop()


class Backoff:
    """Capped exponential backoff with jitter: attempt n waits uniform(floor, ceiling), the
    ceiling min(cap, base * 2**n)."""

    __slots__ = ("_rng", "base", "cap", "floor")

    def __init__(
        self, base: float, cap: float, *, rng: random.Random | None = None, floor: float = 0.0
    ) -> None:
        self.base, self.cap, self.floor = base, cap, floor
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(self.floor, min(self.cap, self.base * 2 ** min(attempt, 32)))


def object_path(collection_path: str, name: str, subresource: str | None = None) -> str:
    """The path of one object (and optionally a subresource) in a collection."""
    path = f"{collection_path}/{quote(name, safe='')}"
    return f"{path}/{subresource}" if subresource else path
