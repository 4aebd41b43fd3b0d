"""Decoding what LIST and WATCH answer: a page's items one at a time, watch events line by line.

Contract:

- `decode_list(data, path)` returns a LIST page's `metadata` and an iterator that decodes its
  `items` one at a time (the whole page when `metadata` does not come first). Anything that is
  not a JSON list object raises KubeApiError "bad_response" naming `path`, also while iterating.
- `watch_lines(chunks, max_line)` yields the non-blank newline-delimited lines of a streaming
  body as its chunks arrive; a line longer than `max_line` raises KubeApiError
  "response_too_large" as soon as that much of it has arrived (never buffering more).
- `decode_event(line)` is one watch event as a `WatchEvent`: type ADDED, MODIFIED, DELETED or
  BOOKMARK and its object (not checked here: the Inventory's parser does). An ERROR event
  raises: ResourceExpired for code 410, else KubeApiError "watch_error"; anything malformed
  raises KubeApiError "bad_response".
- The size caps: a LIST page (the whole body, enforced by the transport) and a watch line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from nodehosts.adapters.kube.errors import KubeApiError, ResourceExpired
from nodehosts.core.inventory import EVENT_TYPES

__all__ = [
    "CHUNK_BYTES",
    "MAX_LINE_BYTES",
    "MAX_PAGE_BYTES",
    "WatchEvent",
    "decode_event",
    "decode_list",
    "watch_lines",
]

# Default size caps (config keys kubernetes.max_page_bytes / max_line_bytes): a page
# of 500 realistic Nodes is ~5-6 MB, so 64 MiB leaves 10x room (128 KB per Node); etcd
# refuses objects over 1.5 MiB, so no legitimate watch event line comes near 16 MiB.
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 16 * 1024 * 1024
# Bytes asked of the socket per read.
CHUNK_BYTES = 65536

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


class WatchEvent(NamedTuple):
    """One watch event: its type and the object (raw JSON, parsed by the Inventory)."""

    type: str
    object: Any


def _skip_space(text: str, position: int) -> int:
    match = _SPACE.match(text, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def decode_list(data: bytes, path: str) -> tuple[dict[str, Any], Iterator[Any]]:
    """A LIST page's metadata, and its items decoded one at a time as they are iterated.

    Decoding a whole 500-Node page builds ~30 MB of objects at once, and the few strings we
    keep from it pin that memory long after (allocator fragmentation); one item at a time keeps
    both the peak and the steady state small. This relies on `metadata` coming before `items`,
    as the apiserver writes it; any other layout falls back to decoding the whole page.
    """
    try:
        text = data.decode()
        del data
        position = _skip_space(text, 0)
        if text[position : position + 1] != "{":
            raise ValueError("not an object")
        position += 1
        metadata: Any = None
        while True:
            position = _skip_space(text, position)
            if text[position : position + 1] == "}":
                break
            key, position = _DECODER.raw_decode(text, position)
            position = _skip_space(text, position)
            if text[position : position + 1] != ":":
                raise ValueError("expected ':'")
            position = _skip_space(text, position + 1)
            if key == "items" and isinstance(metadata, dict):
                if text[position : position + 1] != "[":
                    raise ValueError("items is not a list")
                return metadata, _decode_items(text, position + 1, path)
            value, position = _DECODER.raw_decode(text, position)
            if key == "metadata":
                metadata = value
            position = _skip_space(text, position)
            if text[position : position + 1] == ",":
                position += 1
        document = json.loads(text)  # an unusual layout: decode it all
    except ValueError as error:
        raise KubeApiError("bad_response", f"{path}: not JSON: {error}") from error
    except RecursionError:
        raise KubeApiError("bad_response", f"{path}: nested too deeply") from None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(metadata, dict) or not isinstance(items, list):
        raise KubeApiError("bad_response", f"{path}: not a list (no metadata or items)")
    return metadata, iter(items)


def _decode_items(text: str, position: int, path: str) -> Iterator[Any]:
    try:
        while True:
            position = _skip_space(text, position)
            if text[position : position + 1] == "]":
                return
            item, position = _DECODER.raw_decode(text, position)
            yield item
            del item
            position = _skip_space(text, position)
            if text[position : position + 1] == ",":
                position += 1
            elif text[position : position + 1] != "]":
                raise ValueError(f"expected ',' or ']' at {position}")
    except ValueError as error:
        raise KubeApiError("bad_response", f"{path}: not JSON: {error}") from error
    except RecursionError:
        raise KubeApiError("bad_response", f"{path}: an item is nested too deeply") from None


def watch_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The newline-delimited lines of a streaming body, as chunks arrive; a line longer than
    `max_line` raises KubeApiError "response_too_large" as soon as that much of it arrived."""
    limit = max_line
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if len(line) > limit:
                _line_too_large(limit)
            if line.strip():
                yield line
        if len(pending) > limit:
            _line_too_large(limit)
    if pending.strip():
        yield pending


def _line_too_large(limit: int) -> None:
    raise KubeApiError(
        "response_too_large",
        f"watch event line larger than {limit} bytes (kubernetes.max_line_bytes)",
    )


def decode_event(line: bytes) -> WatchEvent:
    """One watch event line; an ERROR event or a malformed line raises (see the contract)."""
    try:
        event = json.loads(line)
    except ValueError as error:
        raise KubeApiError("bad_response", f"watch event is not JSON: {error}") from error
    except RecursionError:
        raise KubeApiError("bad_response", "watch event is nested too deeply") from None
    if not isinstance(event, dict):
        raise KubeApiError("bad_response", "watch event is not an object")
    event_type, obj = event.get("type"), event.get("object")
    if not isinstance(event_type, str):
        raise KubeApiError("bad_response", "watch event type is not a string")
    if event_type == "ERROR":
        status = obj if isinstance(obj, dict) else {}
        code = status.get("code")
        message = str(status.get("message") or "watch ERROR event")
        if code == 410:
            raise ResourceExpired("expired", message, 410)
        raise KubeApiError("watch_error", message, code if isinstance(code, int) else None)
    if event_type not in EVENT_TYPES:
        raise KubeApiError("bad_response", f"unknown watch event type {event_type!r}")
    return WatchEvent(event_type, obj)
