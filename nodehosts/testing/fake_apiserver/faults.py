"""Faults the fake API server injects into the next N matching requests.

Contract: each `*_next(count, verbs=...)` queues one fault for the next `count` requests whose
verb (list, watch, get, update, other) is in `verbs` (default: any); a request takes the first
queued fault that matches it, in the order they were queued. The request handler decides what a
fault does to a LIST, GET or WATCH (see `FakeApiServer`). Faults on what is already open
(`drop_watches`, `outage`) are the server's: they act on its connections.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Fault", "FaultInjection"]


@dataclass(slots=True)
class Fault:
    kind: Literal["status", "garbage", "drop", "end", "error_event"]
    remaining: int
    verbs: frozenset[str] | None
    status: int = 500
    after_events: int = 0


class FaultInjection:
    """The fault half of FakeApiServer's public API (the server holds the lock)."""

    _lock: threading.RLock
    _faults: list[Fault]

    def fail_next(
        self, count: int = 1, *, status: int = 500, verbs: Iterable[str] | None = None
    ) -> None:
        """Answer the next `count` requests (of `verbs`, default any) with a Status error."""
        self._add_fault(Fault("status", count, _verbs(verbs), status=status))

    def garbage_next(self, count: int = 1, *, verbs: Iterable[str] | None = None) -> None:
        """Answer the next `count` requests with 200 and a body that is not valid JSON."""
        self._add_fault(Fault("garbage", count, _verbs(verbs)))

    def drop_next(
        self, count: int = 1, *, verbs: Iterable[str] | None = None, after_events: int = 0
    ) -> None:
        """Cut the connection of the next `count` requests mid-body (watches: after N events)."""
        self._add_fault(Fault("drop", count, _verbs(verbs), after_events=after_events))

    def end_watches_next(self, count: int = 1) -> None:
        """End the next `count` watches cleanly at once, with no event (a proxy in front of the
        API that closes idle streams, like haproxy's `timeout server`)."""
        self._add_fault(Fault("end", count, frozenset({"watch"})))

    def error_event_next(self, count: int = 1, *, status: int = 500) -> None:
        """Answer the next `count` watches with one ERROR event carrying a Status `status`."""
        self._add_fault(Fault("error_event", count, frozenset({"watch"}), status=status))

    def clear_faults(self) -> None:
        """Forget every queued fault (a test that queued "many" and now wants none)."""
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, verb: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.verbs is None or verb in fault.verbs:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


def _verbs(verbs: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(verbs) if verbs is not None else None
