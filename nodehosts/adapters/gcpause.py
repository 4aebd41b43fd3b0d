"""Pausing Python's cyclic garbage collector around big, acyclic allocations.

Contract: `with gc_paused(): ...` disables the cyclic gc for the block, from any thread;
pauses may overlap (the Node source decoding a LIST page, the daemon building a publication)
and gc is enabled again, if it was enabled, only when the last one ends.

Why: building 500 decoded Nodes or a 20,000-Node publication allocates hundreds of thousands
of container objects. Every 700 of them the gc scans the young ones, and whenever enough have
survived it runs a full collection of everything not frozen: 40-200 ms each, several per
publication (bench/hardening), holding the GIL, so DNS stops answering meanwhile. These
objects are acyclic and freed by reference counting; the daemon freezes what a publication
leaves alive (`gc.freeze()`) so later collections skip it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["gc_paused"]


class _GcPause:
    """Counted, so overlapping pauses from several threads re-enable gc only at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pausers = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._pausers == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._pausers += 1
        try:
            yield
        finally:
            with self._lock:
                self._pausers -= 1
                if self._pausers == 0 and self._was_enabled:
                    gc.enable()


gc_paused = _GcPause()
