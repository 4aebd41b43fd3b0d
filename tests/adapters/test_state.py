"""The saved record set: written atomically, read back at start, bad files reported and ignored."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nodehosts.adapters.state import (
    STATE_FILE_NAME,
    SavedState,
    StateError,
    StateFormatError,
    StateStore,
    decode_state,
    encode_state,
)
from nodehosts.core.model import Host, RecordSet


def host(*names: str, addresses: tuple[str, ...], node: str | None = None) -> Host:
    return Host(
        names=names,
        addresses=tuple(ipaddress.ip_address(a) for a in addresses),
        origin="node" if node else "static",
        node=node,
    )


RECORDS = RecordSet(
    (
        host("gateway.node.internal", "gateway", addresses=("10.240.0.1",)),
        host(
            "worker-0.node.internal",
            "worker-0",
            addresses=("10.240.0.101", "fd00::101"),
            node="worker-0",
        ),
    )
)
STATE = SavedState(records=RECORDS, saved_at=1_700_000_000.25, generation=4, resource_version="812")


def test_saved_state_reads_back_equal(tmp_path: Path) -> None:
    """What was saved is what a restarted daemon loads."""
    store = StateStore(tmp_path)
    store.save(STATE)
    assert StateStore(tmp_path).load() == STATE


def test_empty_record_set_round_trips(tmp_path: Path) -> None:
    """A cluster with nothing published is a valid state too."""
    state = SavedState(records=RecordSet(), saved_at=1.0, generation=0)
    StateStore(tmp_path).save(state)
    assert StateStore(tmp_path).load() == state


def test_encoding_is_deterministic_and_versioned() -> None:
    """Equal states built apart give equal bytes; the file says its format and version. (The
    file read back by a restarted daemon: tests/integration/test_state_restart.py.)"""
    worker = ("worker-0.node.internal", "worker-0")
    rebuilt = SavedState(
        records=RecordSet(
            (
                host("gateway.node.internal", "gateway", addresses=("10.240.0.1",)),
                host(*worker, addresses=("10.240.0.101", "fd00::101"), node="worker-0"),
            )
        ),
        saved_at=1_700_000_000.25,
        generation=4,
        resource_version="812",
    )
    assert rebuilt is not STATE and rebuilt == STATE
    assert encode_state(rebuilt) == encode_state(STATE)
    document = json.loads(encode_state(STATE))
    assert document["format"] == "nodehosts-state"
    assert document["version"] == 1
    assert document["hosts"][1] == {
        "names": ["worker-0.node.internal", "worker-0"],
        "addresses": ["10.240.0.101", "fd00::101"],
        "origin": "node",
        "node": "worker-0",
    }


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """The file is replaced by rename (new inode), no temp file stays, mode 0644."""
    store = StateStore(tmp_path)
    store.save(STATE)
    first_inode = os.stat(store.path).st_ino
    (tmp_path / f".{STATE_FILE_NAME}.tmp").write_text("left by a crash")
    store.save(SavedState(records=RecordSet(), saved_at=2.0, generation=5))
    assert os.stat(store.path).st_ino != first_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE_NAME]
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o644
    loaded = store.load()
    assert loaded is not None and loaded.generation == 5


def test_the_state_directory_is_created(tmp_path: Path) -> None:
    """/var/lib/nodehosts need not exist before the first save."""
    store = StateStore(tmp_path / "var" / "lib" / "nodehosts")
    store.save(STATE)
    assert store.load() == STATE


def test_a_failed_save_names_the_path(tmp_path: Path) -> None:
    """A state directory that cannot be made is a StateError saying where."""
    (tmp_path / "file").write_text("not a directory")
    store = StateStore(tmp_path / "file" / "state")
    with pytest.raises(StateError, match=r"cannot save state .*file/state/records\.json"):
        store.save(STATE)


def test_no_file_is_no_state(tmp_path: Path) -> None:
    """A first start has nothing saved."""
    assert StateStore(tmp_path).load() is None


CORRUPT = [
    (b"", "not JSON"),
    (b'{"format": "nodehosts-state", "version": 1, "hosts": [', "not JSON"),
    (b"[]", "not a nodehosts state file"),
    (b'{"format": "something-else"}', "not a nodehosts state file"),
    (
        b'{"format": "nodehosts-state", "version": 2, "saved_at": 1, "generation": 1, "hosts": []}',
        "format version 2 is newer",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1, "generation": 1, "hosts": '
        b'[{"names": ["a"], "addresses": ["10.0.0.300"], "origin": "static", "node": null}]}',
        "invalid address '10.0.0.300'",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1, "generation": 1, "hosts": '
        b'[{"names": ["a"], "addresses": ["127.0.0.1"], "origin": "static", "node": null}]}',
        "loopback",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1, "generation": 1, "hosts": '
        b'[{"names": ["Bad_Name"], "addresses": ["10.0.0.1"], "origin": "static", "node": null}]}',
        "invalid name 'Bad_Name'",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1, "generation": 1, "hosts": '
        b'[{"names": ["a"], "addresses": ["10.0.0.1"], "origin": "static", "node": null},'
        b' {"names": ["a"], "addresses": ["10.0.0.2"], "origin": "node", "node": "a"}]}',
        "name 'a' is published twice",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1, "generation": -1,'
        b' "hosts": []}',
        "invalid generation",
    ),
    # Issue 12: these crashed every start (RecursionError, ValueError, OverflowError).
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": NaN, "generation": 1,'
        b' "hosts": []}',
        "invalid saved_at",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1e400, "generation": 1,'
        b' "hosts": []}',
        "invalid saved_at",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1e30, "generation": 1,'
        b' "hosts": []}',
        "invalid saved_at",
    ),
    (
        b'{"format": "nodehosts-state", "version": 1, "saved_at": 1, "generation": 1e400,'
        b' "hosts": []}',
        "invalid generation",
    ),
]


@pytest.mark.parametrize(("data", "why"), CORRUPT)
def test_a_corrupt_file_is_reported_and_ignored(tmp_path: Path, data: bytes, why: str) -> None:
    """Any unusable file loads as no state, with the reason in the log; the file stays."""
    (tmp_path / STATE_FILE_NAME).write_bytes(data)
    with capture_logs() as logs:
        assert StateStore(tmp_path).load() is None
    ignored = [entry for entry in logs if entry["event"] == "state_ignored"]
    assert len(ignored) == 1 and why in ignored[0]["reason"], logs
    assert (tmp_path / STATE_FILE_NAME).read_bytes() == data
    with pytest.raises(StateFormatError, match=why.replace("(", r"\(")):
        decode_state(data)


def test_decoded_records_are_in_canonical_order() -> None:
    """A hand-edited file out of order still gives a sorted RecordSet."""
    document = json.loads(encode_state(STATE))
    document["hosts"].reverse()
    document["hosts"][0]["addresses"].reverse()
    decoded = decode_state(json.dumps(document).encode())
    assert decoded.records == RECORDS


def test_a_corrupt_file_is_replaced_by_the_next_save(tmp_path: Path) -> None:
    """After a bad file was ignored, the next publication overwrites it."""
    (tmp_path / STATE_FILE_NAME).write_bytes(b"garbage")
    store = StateStore(tmp_path)
    assert store.load() is None
    store.save(STATE)
    assert store.load() == STATE
