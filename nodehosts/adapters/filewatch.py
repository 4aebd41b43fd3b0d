"""Notice when input files change (config, static hosts, kubeconfig and its credentials).

Contract:

- `FileWatcher(paths, on_change)` calls `on_change(changed)` on the event loop with the set of
  watched paths whose content differs from the last time it looked: created, deleted, or
  rewritten in any way (in place, or a new file renamed over the old one as editors, kubelet
  certificate rotation and Kubernetes' secret volumes (a ``..data`` symlink swap) do). A file
  rewritten with the same bytes, touched, or read is not a change. `on_change` may be a plain
  function or return an awaitable; calls never overlap, and an exception in one is logged and
  does not stop the watcher.
- Events are debounced: the check runs once events have been quiet for `debounce` seconds (at
  most `max_delay` after the first), so an editor's burst of writes and renames is one call.
  As a safety net for missed events (network filesystems, inotify queue overflows), the files
  are also checked every `poll_interval` seconds.
- The watcher (the `watchdog` library) watches directories, not files, so a file may not exist
  yet and may be replaced: for each path it watches the parent directory and, for a symlink,
  the directory of its target; a missing directory is covered by its nearest existing ancestor
  until it appears. A watched directory that is deleted and made again is watched again.
- `set_paths` changes the watched set (a reloaded config may name other files); new paths are
  taken as they are now, without a call. (`kubeconfig_files`, the kubeconfig and the files
  its current context uses, is `nodehosts.adapters.kube.config`'s, re-exported.)

The watchdog thread only pokes the loop; reading files (to compare their content hashes) and
(re)arming directory watches happen in a worker thread, so the loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

# Moved to the Kubernetes adapter, which locates the kubeconfig; importable here until the
# callers import it from there.
from nodehosts.adapters.kube.config import kubeconfig_files

__all__ = ["FileWatcher", "kubeconfig_files"]

log = structlog.get_logger(__name__)

OnChange = Callable[[frozenset[Path]], Any]
Fingerprint = bytes | str | None

# Files we only read (watchdog >= 5 reports opens and reads): checking a file must not wake the
# checker again.
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})
# Config and credential files are small; a bigger one is compared by size and time instead.
_MAX_HASHED_BYTES = 16 * 1024 * 1024


def _fingerprint(path: Path) -> Fingerprint:
    """What the file holds now: a content hash, None when absent, or why it cannot be read."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_size > _MAX_HASHED_BYTES:
                return f"size={info.st_size} mtime={info.st_mtime_ns} ino={info.st_ino}"
            return hashlib.sha256(handle.read()).digest()
    except FileNotFoundError:
        return None
    except OSError as error:
        # Unreadable (permissions, a directory): a state of its own, so fixing it is a change.
        return f"error={error.errno}"


def _nearest_directory(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def _watch_directories(paths: Iterable[Path]) -> set[Path]:
    directories = set()
    for path in paths:
        directories.add(_nearest_directory(path.parent))
        real = Path(os.path.realpath(path))
        if real != path:
            directories.add(_nearest_directory(real.parent))
    return directories


def _identity(directory: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class _Poke(FileSystemEventHandler):
    """Runs in watchdog's thread: any relevant event just wakes the loop."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in _IGNORED_EVENTS:
            self._wake()


class FileWatcher:
    """Watches `paths` and reports content changes to `on_change`; see the module docstring."""

    def __init__(
        self,
        paths: Iterable[Path],
        on_change: OnChange,
        *,
        debounce: float = 0.2,
        max_delay: float = 2.0,
        poll_interval: float | None = 60.0,
    ) -> None:
        self._paths = frozenset(Path(os.path.abspath(p)) for p in paths)
        self._on_change = on_change
        self._debounce = debounce
        self._max_delay = max_delay
        self._poll_interval = poll_interval
        self._fingerprints: dict[Path, Fingerprint] = {}
        # directory -> (watch handle, (st_dev, st_ino) when scheduled)
        self._watches: dict[Path, tuple[Any, tuple[int, int] | None]] = {}
        self._observer: Any = None
        self._handler: _Poke | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poked = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def paths(self) -> frozenset[Path]:
        return self._paths

    async def start(self) -> None:
        """Take the files as they are now and start watching."""
        self._loop = asyncio.get_running_loop()
        self._handler = _Poke(self._wake)
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        async with self._lock:
            await asyncio.to_thread(self._rebaseline, self._paths)
        self._task = asyncio.create_task(self._run(), name="file_watcher")
        log.info(
            "file_watch_started",
            paths=sorted(map(str, self._paths)),
            directories=sorted(map(str, self._watches)),
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            await asyncio.to_thread(observer.join, 5.0)
        self._watches.clear()

    async def set_paths(self, paths: Iterable[Path]) -> None:
        """Watch `paths` from now on; newly added ones are taken as they are now."""
        new = frozenset(Path(os.path.abspath(p)) for p in paths)
        async with self._lock:
            if new == self._paths:
                return
            self._paths = new
            await asyncio.to_thread(self._rebaseline, new)
        log.info("file_watch_paths_changed", paths=sorted(map(str, new)))

    # --- internals

    def _wake(self) -> None:
        """From any thread: something happened in a watched directory."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to do anyway
            loop.call_soon_threadsafe(self._poked.set)

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives with the event (CPython gh-86296), and stop() would hang.
            try:
                async with asyncio.timeout(self._poll_interval):
                    await self._poked.wait()
            except TimeoutError:
                pass  # the periodic safety-net check
            else:
                await self._settle()
            await self._check()

    async def _settle(self) -> None:
        """Return once events stopped for `debounce` seconds, or `max_delay` after the first."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            self._poked.clear()
            remaining = self._max_delay - (loop.time() - started)
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(min(self._debounce, remaining)):
                    await self._poked.wait()
            except TimeoutError:
                return

    async def _check(self) -> None:
        async with self._lock:
            changed = await asyncio.to_thread(self._compare, self._paths)
        if not changed:
            return
        log.info("watched_files_changed", paths=sorted(map(str, changed)))
        try:
            result = self._on_change(changed)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a failing reload must not end the watching
            log.exception("file_change_handler_failed", paths=sorted(map(str, changed)))

    # Worker-thread parts: called only under self._lock, so one at a time.

    def _rebaseline(self, paths: frozenset[Path]) -> None:
        kept = {p: self._fingerprints[p] for p in paths if p in self._fingerprints}
        kept.update((p, _fingerprint(p)) for p in paths if p not in kept)
        self._fingerprints = kept
        self._refresh_watches(paths)

    def _compare(self, paths: frozenset[Path]) -> frozenset[Path]:
        now = {path: _fingerprint(path) for path in paths}
        changed = frozenset(p for p in paths if now[p] != self._fingerprints.get(p))
        self._fingerprints = now
        # Symlinks may point elsewhere now, directories may have appeared or been replaced.
        self._refresh_watches(paths)
        return changed

    def _refresh_watches(self, paths: frozenset[Path]) -> None:
        observer = self._observer
        if observer is None:
            return
        wanted = {directory: _identity(directory) for directory in _watch_directories(paths)}
        for directory, (watch, identity) in list(self._watches.items()):
            if wanted.get(directory, ()) != identity:
                with contextlib.suppress(Exception):  # its emitter may have died with the dir
                    observer.unschedule(watch)
                del self._watches[directory]
        for directory, identity in wanted.items():
            if directory in self._watches or identity is None:
                continue
            try:
                watch = observer.schedule(self._handler, str(directory), recursive=False)
            except OSError as error:
                # Gone again, or out of inotify watches: the periodic check still covers it.
                log.warning("directory_watch_failed", directory=str(directory), error=str(error))
                continue
            self._watches[directory] = (watch, identity)
