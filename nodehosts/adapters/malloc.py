"""Keep glibc from holding on to freed memory after a large LIST.

Contract: `fix_mmap_threshold()` is called once at `nodehosts run` start. It pins glibc's
mmap threshold (M_MMAP_THRESHOLD) at 128 KiB. Without it, each multi-megabyte LIST page
raises the dynamic threshold, later pages land in the watch thread's arena, and ~11 MiB of
freed memory stays resident for good (measured by bench/core: steady RSS 72 -> 61 MiB with
kubernetes 37.x). Allocations above the threshold are mmapped and returned on free. A no-op
where there is no glibc (musl, macOS).

`trim()` gives free heap pages back to the kernel (glibc's malloc_trim(0): every arena, free
pages inside the heap too). The daemon calls it after each publication, whose build frees the
previous records and answers in between long-lived objects. Blocking (it walks the heap;
ctypes releases the GIL): call it from a worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger(__name__)

M_MMAP_THRESHOLD = -3  # from <malloc.h>
THRESHOLD_BYTES = 128 * 1024


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Pin the threshold; True when glibc accepted it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    accepted = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    if not accepted:
        log.warning("malloc_threshold_not_set", threshold=threshold)
    return accepted


def trim() -> bool:
    """malloc_trim(0); True when some memory was given back."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
