"""What a failed API call is: one exception with a short fixed reason for logs and metrics.

Contract: `KubeApiError(reason, message, status)`; `ResourceExpired` (410: relist) is one too.
`status_error(status, body)` turns a non-2xx answer into one, with the message of the
Status object the apiserver sends (else the start of the body). `describe(error)` is an
exception's text, cut for a log line.
"""

from __future__ import annotations

import contextlib
import http.client
import json

__all__ = ["KubeApiError", "ResourceExpired", "describe", "status_error"]


class KubeApiError(Exception):
    """A failed API call: `reason` is a short fixed word for logs and metrics."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        where = reason if status is None else f"{reason} ({status})"
        super().__init__(f"{where}: {message}")
        self.reason, self.message, self.status = reason, message, status


class ResourceExpired(KubeApiError):
    """410 Gone/Expired: the version is older than the server's history; relist."""


def status_error(status: int, body: bytes) -> KubeApiError:
    message = ""
    with contextlib.suppress(ValueError, AttributeError):
        message = str(json.loads(body).get("message") or "")
    if not message:
        message = body[:200].decode("utf-8", "replace").strip() or http.client.responses.get(
            status, "error"
        )
    if status == 410:
        return ResourceExpired("expired", message, status)
    if status == 401:
        reason = "unauthorized"
    elif status == 403:
        reason = "forbidden"
    elif status >= 500:
        reason = "server_error"
    else:
        reason = "http_error"
    return KubeApiError(reason, message, status)


def describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
