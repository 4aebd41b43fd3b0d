"""Replace a file so that readers see the old content or the new, never a mix or nothing.

Contract: `replace_file(path, data, mode=...)` writes `.<name>.tmp` beside `path` (a dot name:
dnsmasq --hostsdir and similar directory watchers ignore it), fsyncs it, renames it over
`path`; on any failure before the rename the temp file is removed and the target is left as
it was. `fsync_directory` then makes the rename itself durable. Both raise OSError; the
callers (the hosts file writer, the state store) decide how to report it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def replace_file(
    path: Path,
    data: bytes,
    *,
    mode: int,
    before_sync: Callable[[int], None] | None = None,
) -> None:
    """Atomically make `path` hold `data` with `mode`.

    `before_sync(fd)` runs on the complete temp file before its fsync and the rename, for
    metadata the readers must see together with the content (the hosts file's mtime).
    """
    temp = temp_path(path)
    # A leftover from a crash may have any mode or owner: start from a fresh inode.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    renamed = False
    try:
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode
        )
        try:
            os.fchmod(fd, mode)  # os.open's mode is filtered by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if before_sync is not None:
                before_sync(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        renamed = True
    finally:
        if not renamed:
            # Best effort: the original error is the one worth reporting.
            with contextlib.suppress(OSError):
                os.unlink(temp)


def fsync_directory(directory: Path) -> None:
    """Make a rename durable: without this a power loss can bring back the old file."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (certain FUSE and network ones) cannot fsync a directory: nothing to
        # report, durability is then up to the filesystem.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
