"""The hosts-file sink: replace one file atomically, only when its bytes change.

Contract (notes/consumers.md says why each rule exists):

- `write(text)` replaces the target only when the UTF-8 bytes differ from what is on disk. An
  identical write touches nothing (inode, mtime and ctime stay as they are) and returns False,
  so a Node heartbeat never wakes a consumer.
- A replacement is written to `.<name>.tmp` in the same directory (dnsmasq --hostsdir ignores
  dot-files), fsynced, renamed over the target, and the directory is fsynced. A reader opening
  the path sees the old file or the new one, never a mix, and a crash at any moment leaves one
  of the two complete files in place.
- The new file's mtime is strictly greater than the previous file's. CoreDNS re-reads only when
  mtime or size changed, and two equal-size writes inside one kernel timestamp tick would look
  unchanged. The bump is applied to the temp file before the rename, so the new inode is never
  visible under the old mtime.
- The target is never truncated or deleted. A temp file left by a crash is replaced by the next
  write; a failed write removes its temp file and leaves the target as it was.
- The file mode is 0644 whatever the umask: CoreDNS and dnsmasq may run as other users.
- The directory is not created: the operator or the package owns it (and its mode). Every OS
  failure, a missing directory included, raises `HostsFileError` naming the path and the cause.
- No rendering here: the caller passes the full text. Blocking (fsync): async code runs `write`
  in a worker thread. One writer per path; calls on one writer are serialised by a lock.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import structlog

from nodehosts.adapters.atomicfile import fsync_directory, replace_file

__all__ = ["HostsFileError", "HostsFileWriter"]

log = structlog.get_logger(__name__)

_MODE = 0o644
# Steps tried, in order, when the new file's mtime does not exceed the previous one: 1 ns keeps
# the file's time honest on filesystems with nanosecond timestamps (ext4, xfs, btrfs, tmpfs);
# the coarser steps cover filesystems that round timestamps (1 us on some NFS, 1 s or 2 s on vfat).
_MTIME_STEPS_NS = (1, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000)


class HostsFileError(Exception):
    """The hosts file could not be read or replaced; the message names the path and the cause.

    A write that raises this left the previous file in place, unchanged.
    """

    def __init__(self, path: Path, action: str, cause: OSError) -> None:
        self.path = path
        self.errno = cause.errno
        super().__init__(f"cannot {action} hosts file {path}: {_describe(path, cause)}")


def _describe(path: Path, cause: OSError) -> str:
    """The cause in words an operator can act on."""
    reason = cause.strerror or str(cause)
    if cause.errno == errno.ENOENT and not path.parent.is_dir():
        return f"directory {path.parent} does not exist (create it; nodehosts does not)"
    if cause.errno in (errno.EACCES, errno.EPERM):
        reason = f"{reason} for uid {os.geteuid()}"
    # The failing call may have been on the temp file or the directory, not the target itself.
    if cause.filename is not None and os.fsdecode(cause.filename) != str(path):
        reason = f"{reason}: {os.fsdecode(cause.filename)}"
    return reason


class HostsFileWriter:
    """Keeps one hosts file at `path`; see the module docstring for the guarantees."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def current(self) -> str | None:
        """The file's text as it is on disk now, or None when there is no file yet.

        Bytes that are not UTF-8 are replaced (U+FFFD): the text is for reading back a previous
        generation, and `write` compares bytes, so such a file is simply rewritten.
        """
        existing = self._read("read")
        return None if existing is None else existing[0].decode("utf-8", errors="replace")

    def write(self, text: str) -> bool:
        """Make the file hold exactly `text`; True if it was replaced, False if already equal."""
        data = text.encode("utf-8")
        with self._lock:
            existing = self._read("write")
            if existing is not None and existing[0] == data:
                return False
            started = time.monotonic()
            previous_mtime_ns = None if existing is None else existing[1]
            try:
                bumped = self._replace(data, previous_mtime_ns)
            except OSError as exc:
                raise HostsFileError(self._path, "write", exc) from exc
            log.debug(
                "hosts_file_replaced",
                path=str(self._path),
                bytes=len(data),
                mtime_bumped=bumped,
                seconds=round(time.monotonic() - started, 6),
            )
            return True

    def _read(self, action: str) -> tuple[bytes, int] | None:
        """(content, mtime_ns) of the target, read through one open file; None when absent.

        `action` is what the caller was doing, for the error message.
        """
        try:
            with open(self._path, "rb") as file:
                mtime_ns = os.fstat(file.fileno()).st_mtime_ns
                return file.read(), mtime_ns
        except FileNotFoundError as exc:
            if not self._path.parent.is_dir():
                raise HostsFileError(self._path, action, exc) from exc
            return None
        except OSError as exc:
            raise HostsFileError(self._path, action, exc) from exc

    def _replace(self, data: bytes, previous_mtime_ns: int | None) -> bool:
        """Write the temp file, rename it over the target, fsync the directory.

        Returns whether the mtime had to be bumped. Removes the temp file on failure.
        """
        bumped: list[bool] = []
        replace_file(
            self._path,
            data,
            mode=_MODE,
            before_sync=lambda fd: bumped.append(self._ensure_newer(fd, previous_mtime_ns)),
        )
        try:
            fsync_directory(self._path.parent)
        except OSError as exc:
            # The new file is already in place and visible; only its survival of a power loss is
            # in doubt, which is not a reason to report the write as failed.
            log.warning("hosts_file_directory_fsync_failed", path=str(self._path), error=str(exc))
        return bumped[0]

    def _ensure_newer(self, fd: int, previous_mtime_ns: int | None) -> bool:
        """Push the open file's mtime past the previous file's when the clock did not."""
        if previous_mtime_ns is None:
            return False
        stat = os.fstat(fd)
        if stat.st_mtime_ns > previous_mtime_ns:
            return False
        for step in _MTIME_STEPS_NS:
            os.utime(fd, ns=(stat.st_atime_ns, previous_mtime_ns + step))
            if os.fstat(fd).st_mtime_ns > previous_mtime_ns:
                return True
        # Not reachable on a filesystem with timestamps finer than 2 s; CoreDNS may then miss an
        # equal-size change until the next write.
        log.warning(
            "hosts_file_mtime_not_increased",
            path=str(self._path),
            previous_mtime_ns=previous_mtime_ns,
        )
        return False
