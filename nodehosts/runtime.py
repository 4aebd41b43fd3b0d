"""Every process-level knob of nodehosts in one place: the event loop, malloc and the gc.

Contract:

- Event loop: `run(main)` runs one coroutine to completion on a fresh loop and returns its
  result, like `asyncio.run`. The loop is uvloop's when the `uvloop` package can be imported
  (a dependency on Linux; python3-uvloop in Debian) unless `use_uvloop=False`; asking for
  uvloop when it is missing raises `RuntimeError`. `loop_factory()` gives the factory for
  `asyncio.Runner` or tests, `loop_name()` names the running loop for logs. The DNS server
  reads its UDP sockets in a loop from a reader callback, so it is about as fast on either
  loop (bench/README.md); uvloop is the default because the package is built around it.
- Threads: `prefer_the_loop()` (at `nodehosts run` start) shortens the GIL switch interval, so
  the loop thread, which answers DNS, waits less for the GIL while other threads work.
- malloc: `fix_mmap_threshold()` is called once at `nodehosts run` start. It pins glibc's
  mmap threshold (M_MMAP_THRESHOLD) at 128 KiB. Without it, each multi-megabyte LIST page
  raises the dynamic threshold, later pages land in the watch thread's arena, and ~11 MiB of
  freed memory stays resident for good (measured by bench/core: steady RSS 72 -> 61 MiB with
  kubernetes 37.x). Allocations above the threshold are mmapped and returned on free. A no-op
  where there is no glibc (musl, macOS). `trim()` gives free heap pages back to the kernel
  (glibc's malloc_trim(0): every arena, free pages inside the heap too). Blocking (it walks
  the heap; ctypes releases the GIL): call it from a worker thread.
- gc, around a publication: `with publication_gc():` pauses the cyclic gc while the record
  set, the DNS answers and the hosts text are built (`gc_paused` below: otherwise
  full collections, 40-200 ms each with the GIL held, ran several times per 20,000-Node
  publication), and `await after_publication()` then freezes what the publication left alive
  (`gc.freeze()`: later collections skip it; with 5000 Nodes a full collection took 30-45 ms
  inside a change's latency, bench/dns/change_latency.py) and trims malloc half a second later,
  once for every publication of that half second (the build frees the previous records and
  answers in between long-lived objects). The price: cyclic garbage
  alive at that moment is never collected; the daemon makes next to none (its data is
  acyclic).
- gc, from any thread: `with gc_paused(): ...` disables the cyclic gc for the block; pauses
  may overlap (the Node source decoding a LIST page in its thread, the daemon building a
  publication) and gc is enabled again, if it was, only when the last one ends. Building 500
  decoded Nodes or a 20,000-Node publication allocates hundreds of thousands of acyclic
  container objects, freed by reference counting; without the pause the gc scans them every
  700 allocations and runs full collections with the GIL held, and DNS stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)


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

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(*, use_uvloop: bool | None = None) -> LoopFactory:
    """uvloop's `new_event_loop` (when wanted and available) or asyncio's."""
    if use_uvloop is False:
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if use_uvloop:
            raise RuntimeError("uvloop was requested but cannot be imported") from exc
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None, debug: bool = False) -> T:
    """Run `main` on a new loop (uvloop if available) and return its result."""
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(use_uvloop=use_uvloop)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """ "uvloop" or "asyncio": which implementation `loop` (default: the running one) is."""
    if loop is None:
        loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


# --- threads

# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
# The event loop answers DNS; during a burst the watch thread decodes Nodes and worker threads
# build the records, and each handover made a waiting query wait up to the interval, several
# times over: at 20,000 Nodes the burst's DNS p99 was 15-19 ms with 5 ms, 11 ms with 1 ms
# (bench/hardening/burst.py, issue 16). Nothing else changes when only the loop runs.
SWITCH_INTERVAL_SECONDS = 0.001


def prefer_the_loop() -> None:
    """Set the GIL switch interval for a daemon whose loop answers queries."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


# --- malloc

M_MMAP_THRESHOLD = -3  # from <malloc.h>
THRESHOLD_BYTES = 128 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once: `find_library` runs `ldconfig -p` (a process) per call,
    and `trim` runs after every publication."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Pin the threshold; True when glibc accepted it."""
    try:
        mallopt = _libc().mallopt  # type: ignore[union-attr]
    except AttributeError:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    accepted = bool(mallopt(M_MMAP_THRESHOLD, threshold) == 1)
    if not accepted:
        log.warning("malloc_threshold_not_set", threshold=threshold)
    return accepted


def trim() -> bool:
    """malloc_trim(0); True when some memory was given back."""
    try:
        malloc_trim = _libc().malloc_trim  # type: ignore[union-attr]
    except AttributeError:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))


# --- gc around a publication


@contextlib.contextmanager
def publication_gc() -> Iterator[None]:
    """No cyclic gc while a publication is built (its objects are acyclic)."""
    with gc_paused():
        yield


# A trim waits this long after the publication that asks for it, and publications meanwhile
# share it: one trim per change cost a thread hop, and the pages it gave back were faulted in
# again by the next change (issue 16: loop CPU per change).
TRIM_DELAY_SECONDS = 0.5
_trim_scheduled: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


async def after_publication() -> None:
    """Freeze what the publication left alive; give free heap pages back (off the loop) within
    TRIM_DELAY_SECONDS, once for all the publications of that time."""
    gc.freeze()
    loop = asyncio.get_running_loop()
    if loop in _trim_scheduled:
        return
    _trim_scheduled.add(loop)

    def start() -> None:
        _trim_scheduled.discard(loop)
        loop.run_in_executor(None, trim)

    loop.call_later(TRIM_DELAY_SECONDS, start)
