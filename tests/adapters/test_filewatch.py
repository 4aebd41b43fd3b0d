"""The file watcher on real files and inotify, changed the way editors and kubelets do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from nodehosts.adapters.filewatch import FileWatcher, kubeconfig_files
from tests.helpers.files import replace_by_rename

TIMEOUT = 5.0


class Calls:
    """Records on_change calls; tests await the next one."""

    def __init__(self) -> None:
        self.calls: list[frozenset[Path]] = []
        self._queue: asyncio.Queue[frozenset[Path]] = asyncio.Queue()

    def __call__(self, changed: frozenset[Path]) -> None:
        self.calls.append(changed)
        self._queue.put_nowait(changed)

    async def next(self) -> frozenset[Path]:
        return await asyncio.wait_for(self._queue.get(), TIMEOUT)

    def empty(self) -> bool:
        return self._queue.empty()


@contextlib.asynccontextmanager
async def started(watcher: FileWatcher) -> AsyncIterator[FileWatcher]:
    """`watcher` started, and stopped on the way out."""
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


def watching(
    paths: Iterable[Path], calls: Calls
) -> contextlib.AbstractAsyncContextManager[FileWatcher]:
    # No polling: these tests prove that events alone are enough.
    return started(FileWatcher(paths, calls, debounce=0.05, max_delay=1.0, poll_interval=None))


@pytest.fixture
async def calls() -> AsyncIterator[Calls]:
    yield Calls()


async def test_an_in_place_edit_is_reported(tmp_path: Path, calls: Calls) -> None:
    """Appending to the static hosts file is one change of that file."""
    static = tmp_path / "static-hosts"
    static.write_text("10.0.0.1 gw\n")
    async with watching([static], calls):
        with static.open("a") as handle:
            handle.write("10.0.0.2 db\n")
        assert await calls.next() == {static}


async def test_a_rename_over_is_reported(tmp_path: Path, calls: Calls) -> None:
    """An editor replacing the file by rename is still seen (the directory is watched)."""
    config = tmp_path / "config.toml"
    config.write_text("[records]\n")
    async with watching([config], calls):
        replace_by_rename(config, "[records]\ndomain = 'lab'\n")
        assert await calls.next() == {config}
        replace_by_rename(config, "[records]\ndomain = 'lab2'\n")  # the new inode is watched too
        assert await calls.next() == {config}


async def test_a_file_that_does_not_exist_yet(tmp_path: Path, calls: Calls) -> None:
    """Creating a watched file that was missing is a change; so is deleting it."""
    token = tmp_path / "token"
    async with watching([token], calls):
        token.write_text("secret")
        assert await calls.next() == {token}
        token.unlink()
        assert await calls.next() == {token}


async def test_a_burst_of_writes_is_one_call(tmp_path: Path, calls: Calls) -> None:
    """Many quick writes give one call, after they settle."""
    static = tmp_path / "static-hosts"
    static.write_text("")
    async with watching([static], calls):
        for i in range(20):
            static.write_text(f"10.0.0.{i} h{i}\n")
        assert await calls.next() == {static}
        await asyncio.sleep(0.3)  # longer than the debounce: a second call would be here
        assert calls.calls == [{static}]


async def test_same_bytes_and_unrelated_files_are_not_changes(tmp_path: Path, calls: Calls) -> None:
    """Touching, rewriting identical bytes or editing a neighbour reports nothing."""
    config, static = tmp_path / "config.toml", tmp_path / "static-hosts"
    config.write_text("a = 1\n")
    static.write_text("10.0.0.1 gw\n")
    async with watching([config, static], calls):
        os.utime(config)
        replace_by_rename(config, "a = 1\n")
        (tmp_path / "unrelated").write_text("x")
        config.read_text()
        await asyncio.sleep(0.3)
        # A real change afterwards is reported alone: nothing before it was a change.
        static.write_text("10.0.0.9 gw\n")
        assert await calls.next() == {static}
        assert calls.calls == [{static}]


async def test_a_missing_directory_is_watched_once_it_appears(tmp_path: Path, calls: Calls) -> None:
    """A path under a directory that does not exist yet is seen when both are created."""
    cert = tmp_path / "pki" / "issued" / "client.pem"
    async with watching([cert], calls):
        cert.parent.mkdir(parents=True)
        cert.write_text("CERT 1")
        assert await calls.next() == {cert}
        cert.write_text("CERT 2")
        assert await calls.next() == {cert}


async def test_a_deleted_and_recreated_directory_is_watched_again(
    tmp_path: Path, calls: Calls
) -> None:
    """rm -rf of the config directory and a fresh copy: later edits are still seen."""
    directory = tmp_path / "etc"
    directory.mkdir()
    config = directory / "config.toml"
    config.write_text("a = 1\n")
    async with watching([config], calls):
        shutil.rmtree(directory)
        assert await calls.next() == {config}
        directory.mkdir()
        config.write_text("a = 2\n")
        assert await calls.next() == {config}
        config.write_text("a = 3\n")
        assert await calls.next() == {config}


async def test_kubernetes_secret_volume_swap(tmp_path: Path, calls: Calls) -> None:
    """A projected token rotated by the ..data symlink swap is a change of the token path."""
    volume = tmp_path / "serviceaccount"
    volume.mkdir()
    (volume / "..2024_01").mkdir()
    (volume / "..2024_01" / "token").write_text("token-1")
    os.symlink("..2024_01", volume / "..data")
    os.symlink("..data/token", volume / "token")
    token = volume / "token"
    async with watching([token], calls):
        (volume / "..2024_02").mkdir()
        (volume / "..2024_02" / "token").write_text("token-2")
        os.symlink("..2024_02", volume / "..data_tmp")
        os.rename(volume / "..data_tmp", volume / "..data")
        shutil.rmtree(volume / "..2024_01")
        assert await calls.next() == {token}
        assert token.read_text() == "token-2"


async def test_a_symlink_target_elsewhere_edited_in_place(tmp_path: Path, calls: Calls) -> None:
    """kubelet-client-current.pem style: the link's target directory is watched too."""
    (tmp_path / "pki").mkdir()
    (tmp_path / "conf").mkdir()
    target = tmp_path / "pki" / "client-2024.pem"
    target.write_text("CERT 1")
    link = tmp_path / "conf" / "client.pem"
    os.symlink(target, link)
    async with watching([link], calls):
        target.write_text("CERT 2")
        assert await calls.next() == {link}
        # Rotation: a new file and the link re-pointed by rename.
        newer = tmp_path / "pki" / "client-2025.pem"
        newer.write_text("CERT 3")
        os.symlink(newer, tmp_path / "conf" / ".client.pem.new")
        os.rename(tmp_path / "conf" / ".client.pem.new", link)
        assert await calls.next() == {link}


async def test_set_paths_changes_what_is_watched(tmp_path: Path, calls: Calls) -> None:
    """After set_paths the new file is watched (without a call for adding it), the old is not."""
    old, new = tmp_path / "old.pem", tmp_path / "sub" / "new.pem"
    old.write_text("1")
    new.parent.mkdir()
    new.write_text("1")
    async with watching([old], calls) as watcher:
        await watcher.set_paths([new])
        assert watcher.paths == {new}
        old.write_text("2")
        new.write_text("2")
        assert await calls.next() == {new}


async def test_a_failing_or_async_handler_does_not_stop_the_watcher(tmp_path: Path) -> None:
    """An exception in on_change is logged; the next change is still delivered."""
    seen: asyncio.Queue[frozenset[Path]] = asyncio.Queue()

    async def handler(changed: frozenset[Path]) -> None:
        await seen.put(changed)
        if seen.qsize() == 1:
            raise RuntimeError("broken config")

    static = tmp_path / "static-hosts"
    static.write_text("")
    async with started(FileWatcher([static], handler, debounce=0.05, poll_interval=None)):
        static.write_text("1")
        assert await asyncio.wait_for(seen.get(), TIMEOUT) == {static}
        static.write_text("2")
        assert await asyncio.wait_for(seen.get(), TIMEOUT) == {static}


def hard_linked_elsewhere(tmp_path: Path) -> tuple[Path, Path]:
    """`watched/static-hosts` and a hard link to it in another directory, `elsewhere`.

    Writes through a hard link in an unwatched directory raise no event in the watched one.
    """
    (tmp_path / "watched").mkdir()
    (tmp_path / "elsewhere").mkdir()
    static = tmp_path / "watched" / "static-hosts"
    static.write_text("1")
    other = tmp_path / "elsewhere" / "same-inode"
    os.link(static, other)
    return static, other


async def test_polling_catches_what_events_miss(tmp_path: Path, calls: Calls) -> None:
    """With a poll interval, a change is found even when no event reaches the watcher."""
    static, other = hard_linked_elsewhere(tmp_path)
    async with started(FileWatcher([static], calls, debounce=0.05, poll_interval=0.2)):
        with other.open("a") as handle:
            handle.write("2")
        assert await calls.next() == {static}


async def test_without_polling_such_a_change_waits_for_an_event(
    tmp_path: Path, calls: Calls
) -> None:
    """The hard-link trick above really bypasses the events (so that test tests polling)."""
    static, other = hard_linked_elsewhere(tmp_path)
    async with watching([static], calls):
        with other.open("a") as handle:
            handle.write("2")
        await asyncio.sleep(0.5)
        assert calls.calls == []
        (tmp_path / "watched" / "neighbour").write_text("wakes the checker")
        assert await calls.next() == {static}


KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: lab
contexts:
- name: lab
  context: {cluster: lab, user: kubelet}
- name: other
  context: {cluster: other, user: admin}
clusters:
- name: lab
  cluster: {server: "https://10.240.0.40:6443", certificate-authority: pki/ca.crt}
- name: other
  cluster: {server: "https://example:6443", certificate-authority: /elsewhere/ca.crt}
users:
- name: kubelet
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
    tokenFile: ../token
- name: admin
  user: {client-certificate: /elsewhere/admin.pem}
"""


def test_kubeconfig_files_of_the_current_context(tmp_path: Path) -> None:
    """The kubeconfig, its CA, certificate, key and token; relative to the kubeconfig's dir."""
    kubeconfig = tmp_path / "conf" / "kubeconfig"
    kubeconfig.parent.mkdir()
    kubeconfig.write_text(KUBECONFIG)
    assert kubeconfig_files(kubeconfig) == {
        kubeconfig,
        tmp_path / "conf" / "pki" / "ca.crt",
        Path("/var/lib/kubelet/pki/kubelet-client-current.pem"),
        tmp_path / "token",
    }


def test_kubeconfig_files_of_a_broken_kubeconfig(tmp_path: Path) -> None:
    """Unparsable or missing: just the kubeconfig itself, so its repair is noticed."""
    broken = tmp_path / "kubeconfig"
    broken.write_text("users: [\n")
    assert kubeconfig_files(broken) == {broken}
    assert kubeconfig_files(tmp_path / "absent") == {tmp_path / "absent"}


async def test_a_stop_that_coincides_with_a_file_event_is_not_lost(tmp_path: Path) -> None:
    """A cancel arriving in the same tick as a file event still cancels (no hang on SIGTERM).

    Python 3.11's asyncio.wait_for returns the inner result instead of raising when both
    happen at once (CPython gh-86296), so the watcher used to settle and run on.
    """
    watcher = FileWatcher([tmp_path / "watched"], lambda changed: None, debounce=0.2)
    settling = asyncio.create_task(watcher._settle())
    await asyncio.sleep(0.01)
    watcher._poked.set()
    settling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(settling, 1.0)
