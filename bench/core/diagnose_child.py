"""Child process of `bench_sync.py --diagnose`: the real CLI, plus a memory report on request.

Usage: BENCH_DIAG_REPORT=PATH [BENCH_DIAG_TRACEMALLOC=1]
       python diagnose_child.py run ARGS...        (the arguments of `nodehosts run`)

Runs `nodehosts.cli` unchanged in this process. On SIGUSR1 (handled on the main thread
between two callbacks of the event loop; no helper thread, which would change which glibc
arena the watch thread gets) it writes a JSON report to BENCH_DIAG_REPORT:

- without tracemalloc: VmRSS/RssAnon, pymalloc's own accounting (sys._debugmallocstats: arenas
  mapped, bytes in live blocks, free bytes in partly used pools), glibc's (malloc_stats, all
  arenas), the modules loaded per top-level package, the gc-tracked object count and top
  types, then VmRSS again after gc.collect() and after malloc_trim(0): how much of the steady
  RSS is live data and how much is free memory the allocators keep (malloc_trim cannot give
  back the top of a non-main glibc arena, where the watch thread's page buffers live);
- with BENCH_DIAG_TRACEMALLOC=1 (tracemalloc started before nodehosts is imported, one frame):
  the traced size now and at its peak, and the top allocation sites (lines, files) still
  alive.

Diagnostic only: the wrapper and the report change the numbers a little (tracemalloc a lot),
so bench_sync.py measures its targets on the plain CLI instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import re
import runpy
import signal
import sys
import tempfile
import tracemalloc
from collections import Counter
from typing import Any

TRACE = os.environ.get("BENCH_DIAG_TRACEMALLOC") == "1"
if TRACE:
    tracemalloc.start(1)


def _status() -> dict[str, int]:
    values: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])
    return values


def _captured_stderr(function: Any) -> str:
    """What a C function prints on fd 2 (the daemon is idle and logs nothing meanwhile)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            function()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode("utf-8", "replace")


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text, re.MULTILINE)
    return int(match.group(1).replace(",", "")) if match else 0


def _pymalloc() -> dict[str, float]:
    text = _captured_stderr(sys._debugmallocstats)
    mib = 1024 * 1024
    unused = re.search(r"^(\d+) unused pools \* (\d+) bytes", text, re.MULTILINE)
    return {
        "arenas": _number(r"^# arenas allocated current\s*=\s*([\d,]+)", text),
        "arena_mib": _number(r"arenas \* \d+ bytes/arena\s*=\s*([\d,]+)", text) / mib,
        "used": _number(r"^# bytes in allocated blocks\s*=\s*([\d,]+)", text) / mib,
        "free": _number(r"^# bytes in available blocks\s*=\s*([\d,]+)", text) / mib,
        "empty": (int(unused.group(1)) * int(unused.group(2)) / mib) if unused else 0.0,
        "highwater_arenas": _number(r"^# arenas highwater mark\s*=\s*([\d,]+)", text),
    }


def _glibc(libc: ctypes.CDLL) -> dict[str, float]:
    text = _captured_stderr(libc.malloc_stats)
    total = text.partition("Total (incl. mmap):")[2]
    mib = 1024 * 1024
    system = _number(r"system bytes\s*=\s*(\d+)", total)
    in_use = _number(r"in use bytes\s*=\s*(\d+)", total)
    return {
        "arenas": len(re.findall(r"^Arena \d+:", text, re.MULTILINE)),
        "in_use": in_use / mib,
        "free": (system - in_use) / mib,
        "mmap": _number(r"max mmap bytes\s*=\s*(\d+)", total) / mib,
    }


def _report() -> dict[str, Any]:
    report: dict[str, Any] = {"rss_kb": _status()}
    if TRACE:
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        top = []
        for stat in snapshot.statistics("lineno")[:15]:
            frame = stat.traceback[0]
            where = frame.filename.replace(sys.prefix, "<prefix>")
            size = f"{stat.size / 1024:8.0f} KiB {stat.count:7d} blocks"
            top.append(f"{size}  {where}:{frame.lineno}")
        files = []
        for stat in snapshot.statistics("filename")[:12]:
            where = stat.traceback[0].filename.replace(sys.prefix, "<prefix>")
            files.append(f"{stat.size / 1024:8.0f} KiB {stat.count:7d} blocks  {where}")
        report.update(
            traced_mib=current / 2**20, traced_peak_mib=peak / 2**20, top=top, files=files
        )
        report["note"] = "with tracemalloc (RSS inflated by it)"
        return report
    libc = ctypes.CDLL("libc.so.6")
    report["note"] = "plain run under diagnose_child.py"
    report["pymalloc"] = _pymalloc()
    with contextlib.suppress(Exception):
        report["mallinfo2"] = _glibc(libc)
    packages = Counter(name.partition(".")[0] for name in list(sys.modules))
    report["modules"] = [len(sys.modules), packages.most_common(12)]
    objects = gc.get_objects()
    report["objects"] = len(objects)
    report["types"] = Counter(type(o).__name__ for o in objects).most_common(8)
    del objects
    gc.collect()
    report["after_gc_kb"] = _status()
    libc.malloc_trim(0)
    report["after_trim_kb"] = _status()
    return report


def _on_signal(signum: int, frame: Any) -> None:
    target = os.environ["BENCH_DIAG_REPORT"]
    try:
        report = _report()
    except Exception as error:  # report the failure instead of hanging the bench
        report = {"error": f"{type(error).__name__}: {error}"}
    temp = target + ".tmp"
    with open(temp, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=1)
    os.replace(temp, target)


def main() -> None:
    signal.signal(signal.SIGUSR1, _on_signal)
    sys.argv = ["nodehosts", *sys.argv[1:]]
    runpy.run_module("nodehosts.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
