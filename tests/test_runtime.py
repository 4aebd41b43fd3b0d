"""nodehosts.runtime's malloc knobs: the mmap threshold pin that keeps steady RSS down after large
LISTs, and trim after a publication."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

from nodehosts.runtime import fix_mmap_threshold

# Decode-sized buffers allocated and freed in a worker thread, the way LIST pages are, then
# the resident size of the process. Measured in a fresh interpreter so nothing else counts.
PROBE = textwrap.dedent(
    """
    import sys, threading
    from nodehosts.runtime import fix_mmap_threshold
    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold()
    def pages():
        keep = []
        for i in range(12):
            page = bytearray(6 * 1024 * 1024)
            keep.append([str(j) * 3 for j in range(20000)])  # small objects between pages
            del page
        keep.clear()
    thread = threading.Thread(target=pages)
    thread.start(); thread.join()
    big = [bytearray(6 * 1024 * 1024) for _ in range(3)]
    del big
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            print(int(line.split()[1]))
    """
)


def rss_kib(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip())


def test_glibc_accepts_the_threshold() -> None:
    """On this (glibc) system the pin takes effect."""
    assert fix_mmap_threshold() is True


def test_freed_large_buffers_are_returned_to_the_system() -> None:
    """With the pin, multi-megabyte buffers freed after use do not stay resident."""
    fixed, default = rss_kib("fixed"), rss_kib("default")
    # Without the pin glibc keeps ~12 MiB of the freed pages here (measured: 39 vs 25 MiB).
    assert fixed + 8 * 1024 < default, f"RSS with the pin {fixed} KiB, without {default} KiB"


TRIM_PROBE = textwrap.dedent(
    """
    from nodehosts.runtime import fix_mmap_threshold, trim
    assert fix_mmap_threshold()
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    # Mid-size objects (glibc's heap, not pymalloc) with a long-lived one every so often, as
    # a publication leaves them among the garbage of the one before; then the garbage goes.
    garbage, kept = [], []
    for i in range(40000):
        (kept if i % 64 == 0 else garbage).append(bytes(2000))
    del garbage
    before = rss()
    trimmed = trim()
    print(before, rss(), trimmed)
    """
)


def test_trim_gives_free_heap_pages_back() -> None:
    """Issue 12: what a burst freed between long-lived objects stayed resident; the daemon
    trims after each publication."""
    result = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True
    )
    before, after, trimmed = result.stdout.split()
    assert trimmed == "True"
    # ~78 MB were freed among the kept objects; most of it stays resident until the trim.
    assert int(after) + 40 * 1024 < int(before), result.stdout


def test_overlapping_gc_pauses_enable_gc_again_only_when_the_last_ends() -> None:
    """The Node source's thread and the publisher pause gc independently: the first to end
    must not turn it back on under the other, and the last must (unless it was off)."""
    import gc
    import threading

    from nodehosts.runtime import gc_paused

    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        with gc_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert inside.wait(10)
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other thread's pause still holds
    finally:
        release.set()
        thread.join(10)
    assert gc.isenabled()

    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


SPAWN_PROBE = textwrap.dedent(
    """
    import sys
    from nodehosts.runtime import fix_mmap_threshold, trim
    spawned = []
    sys.addaudithook(lambda event, args: spawned.append(event) if event in (
        "subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec") else None)
    fix_mmap_threshold()
    trim()
    first = len(spawned)
    for _ in range(5):
        fix_mmap_threshold()
        trim()
    print(first, len(spawned) - first)
    """
)


def test_trim_and_the_threshold_pin_start_no_process_per_call() -> None:
    """Issue 16: trim() ran after every publication and looked libc up each time with
    ctypes.util.find_library, which runs `ldconfig -p`: a process per Node change, 27% of the
    daemon's worker-thread time in bench/core/bench_sync.py. libc is looked up once."""
    result = subprocess.run(
        [sys.executable, "-c", SPAWN_PROBE], capture_output=True, text=True, check=True
    )
    first, later = map(int, result.stdout.split())
    assert later == 0, f"{later} processes started by 5 more calls (first call: {first})"


def test_publications_close_together_share_one_trim(monkeypatch: Any) -> None:
    """Issue 16: a burst of publications trims malloc once after it, not once each (a thread
    hop and re-faulted pages per Node change); a publication after that trims again."""
    import asyncio
    import threading

    from nodehosts import runtime

    trims: list[float] = []
    done = threading.Event()

    def counting_trim() -> bool:
        trims.append(time.monotonic())
        done.set()
        return True

    monkeypatch.setattr(runtime, "trim", counting_trim)

    async def main() -> None:
        started = time.monotonic()
        for _ in range(20):
            await runtime.after_publication()
            await asyncio.sleep(0.01)
        assert trims == []  # none while the publications keep coming
        assert await asyncio.to_thread(done.wait, 5)
        assert len(trims) == 1
        assert trims[0] - started >= runtime.TRIM_DELAY_SECONDS
        done.clear()
        await runtime.after_publication()
        assert await asyncio.to_thread(done.wait, 5)
        assert len(trims) == 2

    runtime.run(main())


def test_the_daemon_hands_the_gil_to_its_loop_sooner_than_python_does() -> None:
    """Issue 16: a DNS query waits for the GIL while other threads build; `nodehosts run`
    shortens CPython's 5 ms switch interval."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from nodehosts.runtime import prefer_the_loop;"
            " before = sys.getswitchinterval(); prefer_the_loop();"
            " print(before, sys.getswitchinterval())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after = map(float, result.stdout.split())
    assert after < before and after <= 0.001
