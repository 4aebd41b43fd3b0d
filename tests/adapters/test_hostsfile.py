"""HostsFileWriter against the real filesystem: what a reader of the file can observe."""

from __future__ import annotations

import errno
import itertools
import os
import pickle
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodehosts.adapters.hostsfile import HostsFileError, HostsFileWriter
from tests.helpers.skips import skip_unless_ci
from tests.helpers.write_burst import render

REPO_ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

FIRST = "10.240.0.101 worker-1.node.internal worker-1\n"
# Same length as FIRST: only the mtime can tell CoreDNS that the file changed.
SECOND = "10.240.0.102 worker-1.node.internal worker-1\n"


@pytest.fixture
def target(tmp_path: Path) -> Path:
    directory = tmp_path / "nodehosts"
    directory.mkdir()
    return directory / "hosts"


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A root-owned directory everyone may enter but only its owner may write.

    pytest's tmp_path sits under a 0700 directory, where an unprivileged user would fail on the
    way in instead of at the directory under test.
    """
    base = Path(tempfile.mkdtemp(prefix="nodehosts-test-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class Failure:
    """What a HostsFileError told the caller."""

    message: str
    errno: int | None
    path: Path


def failure_without_write_permission(directory: Path, call: Callable[[], object]) -> Failure:
    """Run `call` as a user who may not write `directory`; return the HostsFileError it raised.

    As root (CI) the call runs in a forked child that became nobody: root ignores file modes, and
    switching the test process itself would also switch any other thread in it. Otherwise the
    directory is made read-only around the call.
    """
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            return _failure_of(call)
        finally:
            directory.chmod(mode)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                outcome: Failure | str = _failure_of(call)
            except BaseException as exc:  # everything goes back to the parent as text
                outcome = repr(exc)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
        finally:
            os._exit(0)  # never return into pytest in the child
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pickle.load(pipe)
    os.waitpid(pid, 0)
    assert isinstance(outcome, Failure), f"the unprivileged call did not fail cleanly: {outcome}"
    return outcome


def _failure_of(call: Callable[[], object]) -> Failure:
    try:
        result = call()
    except HostsFileError as exc:
        return Failure(str(exc), exc.errno, exc.path)
    raise AssertionError(f"expected HostsFileError, got {result!r}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small (64 KiB) tmpfs of its own, so a test can fill it up or make it read-only."""
    if os.geteuid() != 0:
        skip_unless_ci(
            "mounting a tmpfs needs root",
            how="sudo .venv/bin/python -m pytest tests/adapters/test_hostsfile.py",
        )
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mountpoint], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", mountpoint], check=True)


# --- reading


def test_current_is_none_before_the_first_write(target: Path) -> None:
    """A directory without the file yet reads as 'no previous generation'."""
    assert HostsFileWriter(target).current() is None


def test_current_returns_the_text_on_disk(target: Path) -> None:
    """The previous generation is read back as written, even by a new writer."""
    HostsFileWriter(target).write(FIRST)
    assert HostsFileWriter(target).current() == FIRST


def test_constructing_a_writer_touches_nothing(tmp_path: Path) -> None:
    """A writer for a missing directory can be made; only using it fails."""
    writer = HostsFileWriter(tmp_path / "absent" / "hosts")
    assert writer.path == tmp_path / "absent" / "hosts"
    assert listing(tmp_path) == []


# --- writing


def test_the_first_write_creates_the_file_readable_by_everyone(target: Path) -> None:
    """The file is 0644 even under a strict umask: CoreDNS may run as another user."""
    with umask(0o077):
        assert HostsFileWriter(target).write(FIRST) is True
    assert target.read_text() == FIRST
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_replaced_file_is_0644_whatever_mode_the_old_one_had(target: Path) -> None:
    target.write_text(FIRST)
    target.chmod(0o600)
    HostsFileWriter(target).write(SECOND)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_identical_text_leaves_the_file_and_its_mtime_untouched(target: Path) -> None:
    """A heartbeat that renders the same bytes wakes no consumer."""
    writer = HostsFileWriter(target)
    writer.write(FIRST)
    before = target.stat()
    assert writer.write(FIRST) is False
    assert HostsFileWriter(target).write(FIRST) is False
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_ctime_ns,
    )
    assert listing(target.parent) == ["hosts"]


def test_changed_text_replaces_the_file_with_a_new_inode(target: Path) -> None:
    """A rename, not an in-place rewrite: a reader holding the old file keeps all of it."""
    writer = HostsFileWriter(target)
    writer.write(FIRST)
    old_inode = target.stat().st_ino
    with open(target) as held:
        assert writer.write(SECOND) is True
        assert held.read() == FIRST
    assert target.stat().st_ino != old_inode
    assert target.read_text() == SECOND


def test_a_file_edited_by_hand_is_put_back_by_the_next_write(target: Path) -> None:
    """Equality is checked against the disk, not against what the writer remembers."""
    writer = HostsFileWriter(target)
    writer.write(FIRST)
    target.write_text("10.0.0.1 intruder\n")
    assert writer.write(FIRST) is True
    assert target.read_text() == FIRST


def test_readers_never_see_a_partial_or_empty_file(target: Path) -> None:
    """A reader opening the path during 100 rewrites always gets one whole generation."""
    texts = {render(0), render(1)}
    writer = HostsFileWriter(target)
    writer.write(render(0))
    reads = 0
    torn: list[str] = []
    stop = threading.Event()

    def read_continuously() -> None:
        nonlocal reads
        while not stop.is_set():
            text = target.read_text()
            reads += 1
            if text not in texts:
                torn.append(f"{len(text)} chars ending {text[-40:]!r}")

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for generation in range(1, 101):
            writer.write(render(generation % 2))
    finally:
        stop.set()
        reader.join()
    assert torn == []
    assert reads > 10


def test_equal_size_rapid_writes_always_increase_the_mtime(target: Path) -> None:
    """50 same-size rewrites in a row: CoreDNS (mtime or size) sees every one of them."""
    writer = HostsFileWriter(target)
    mtimes: list[int] = []
    sizes: set[int] = set()
    for i in range(50):
        writer.write(SECOND if i % 2 else FIRST)
        info = target.stat()
        mtimes.append(info.st_mtime_ns)
        sizes.add(info.st_size)
    assert sizes == {len(FIRST)}
    assert all(later > earlier for earlier, later in itertools.pairwise(mtimes))
    # The bump is the smallest that works, so the file's time stays honest.
    assert mtimes[-1] <= time.time_ns() + 1_000_000


def test_the_mtime_increases_even_when_the_old_file_is_dated_in_the_future(target: Path) -> None:
    """Clock steps backwards (or a touched file) cannot hide a change from CoreDNS."""
    writer = HostsFileWriter(target)
    writer.write(FIRST)
    future = time.time_ns() + 3600 * 10**9
    os.utime(target, ns=(future, future))
    writer.write(SECOND)
    assert target.stat().st_mtime_ns > future


def test_text_is_stored_as_utf8(target: Path) -> None:
    HostsFileWriter(target).write("# gen\u00e9ration 1\n" + FIRST)
    assert target.read_bytes() == ("# gen\u00e9ration 1\n" + FIRST).encode("utf-8")


# --- temp files


def test_a_leftover_temp_file_from_a_crash_is_replaced_and_gone_after_the_next_write(
    target: Path,
) -> None:
    """Whatever a crash left as `.hosts.tmp` (any content, any mode) does not get in the way."""
    leftover = target.parent / ".hosts.tmp"
    leftover.write_text("10.0.0.9 half-writ")
    leftover.chmod(0o400)
    HostsFileWriter(target).write(FIRST)
    assert listing(target.parent) == ["hosts"]
    assert target.read_text() == FIRST


def test_a_directory_in_place_of_the_file_is_an_error_naming_the_path(target: Path) -> None:
    target.mkdir()
    with pytest.raises(HostsFileError, match=str(target)) as caught:
        HostsFileWriter(target).write(FIRST)
    assert caught.value.errno == errno.EISDIR
    assert caught.value.path == target


# --- errors


def test_a_missing_directory_is_an_error_naming_the_path_and_is_not_created(
    tmp_path: Path,
) -> None:
    """The package or the operator creates the directory; nodehosts says which one is missing."""
    path = tmp_path / "etc" / "nodehosts" / "hosts"
    writer = HostsFileWriter(path)
    with pytest.raises(HostsFileError) as caught:
        writer.write(FIRST)
    message = str(caught.value)
    assert str(path) in message
    assert f"directory {path.parent} does not exist" in message
    assert caught.value.path == path
    with pytest.raises(HostsFileError, match="does not exist"):
        writer.current()
    assert listing(tmp_path) == []


def test_an_unwritable_directory_is_an_error_naming_the_path_and_keeps_the_old_file(
    traversable_dir: Path,
) -> None:
    """Running as a user who may not write the directory: a clear error, the old file intact."""
    target = traversable_dir / "hosts"
    writer = HostsFileWriter(target)
    writer.write(FIRST)
    failure = failure_without_write_permission(traversable_dir, lambda: writer.write(SECOND))
    assert str(target) in failure.message
    assert "Permission denied" in failure.message
    assert failure.errno == errno.EACCES
    assert failure.path == target
    assert target.read_text() == FIRST
    assert listing(traversable_dir) == ["hosts"]


def test_an_unreadable_file_is_an_error_naming_the_path(traversable_dir: Path) -> None:
    target = traversable_dir / "hosts"
    target.write_text(FIRST)
    target.chmod(0o600)
    if os.geteuid() != 0:
        target.chmod(0o000)
    failure = failure_without_write_permission(
        traversable_dir, lambda: HostsFileWriter(target).current()
    )
    assert str(target) in failure.message
    assert failure.errno == errno.EACCES


def test_a_read_only_filesystem_is_an_error_and_keeps_the_old_file(tmpfs: Path) -> None:
    target = tmpfs / "hosts"
    writer = HostsFileWriter(target)
    writer.write(FIRST)
    subprocess.run(["mount", "-o", "remount,ro", tmpfs], check=True)
    with pytest.raises(HostsFileError) as caught:
        writer.write(SECOND)
    assert str(target) in str(caught.value)
    assert "Read-only file system" in str(caught.value)
    assert caught.value.errno == errno.EROFS
    assert target.read_text() == FIRST


def test_a_full_filesystem_is_an_error_and_leaves_the_old_file_and_no_temp_file(
    tmpfs: Path,
) -> None:
    target = tmpfs / "hosts"
    writer = HostsFileWriter(target)
    writer.write(FIRST)
    with pytest.raises(HostsFileError) as caught:
        writer.write(render(0))  # ~110 KB into 64 KiB
    assert str(target) in str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == FIRST
    assert listing(tmpfs) == ["hosts"]


# --- crashes


def test_a_sigkill_during_a_burst_of_writes_always_leaves_a_complete_file(target: Path) -> None:
    """Kill a writer at 30 random moments of a burst of ~100 KB rewrites; the file is always whole.

    Each generation alternates between 2000 and 1500 host lines and repeats its number in the
    trailer, so a torn, truncated or mixed file cannot equal `render(n)` for the n it names.
    """
    seed = time.time_ns()
    rng = random.Random(seed)
    HostsFileWriter(target).write(render(0))
    generations_seen: set[int] = set()
    leftover_temp_files = 0
    for round_ in range(30):
        first_generation = (round_ + 1) * 1_000_000
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.write_burst", str(target), str(first_generation)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline() == "writing\n"
            time.sleep(rng.uniform(0.0, 0.03))  # the random moment of the kill
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
            if writer.stdout is not None:
                writer.stdout.close()

        text = target.read_text()
        header = re.match(r"# burst generation (\d+) ", text)
        assert header, f"seed {seed} round {round_}: no header, file starts {text[:40]!r}"
        generation = int(header[1])
        assert text == render(generation), f"seed {seed} round {round_}: torn file {header[0]!r}"
        generations_seen.add(generation)
        others = set(listing(target.parent)) - {"hosts"}
        assert others <= {".hosts.tmp"}, f"seed {seed} round {round_}: unexpected files {others}"
        leftover_temp_files += bool(others)

    # The kills did land in the middle of bursts: files were replaced, and some kills
    # caught a temp file half-written.
    assert len(generations_seen) > 10, f"seed {seed}"
    assert leftover_temp_files > 0, f"seed {seed}"
    HostsFileWriter(target).write(FIRST)
    assert listing(target.parent) == ["hosts"]
