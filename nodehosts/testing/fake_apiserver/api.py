"""What the fake API server's parts share: collections, Status errors and compact JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NODES",
    "REASONS",
    "ApiStatus",
    "Json",
    "ResourceType",
    "SubresourceHandler",
    "encode",
    "status_object",
]

Json = dict[str, Any]


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


REASONS = {
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


def encode(obj: Any) -> bytes:
    """Compact JSON, as the apiserver writes it (objects are stored encoded)."""
    return json.dumps(obj, separators=(",", ":")).encode()
