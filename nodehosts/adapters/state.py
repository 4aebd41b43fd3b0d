"""The last published record set, kept on disk so a restart can serve it before the API answers.

Contract:

- One file, ``<state_dir>/records.json``: a JSON object ``{"format": "nodehosts-state",
  "version": 1, "saved_at", "generation", "resource_version", "hosts": [...]}``, each host as
  ``{"names", "addresses", "origin", "node"}`` exactly like the dump's hosts. `encode_state` and
  `decode_state` are the pure halves (bytes in, bytes out); equal states give equal bytes.
- `StateStore.save` replaces the file atomically: a temp file in the same directory, written,
  fsynced, renamed over the target, then the directory fsynced. A reader sees the old file or
  the new one; a crash leaves one of the two. The directory is created when missing (it is
  nodehosts' own, like systemd's StateDirectory=). Failures raise `StateError` naming the path;
  saving is best effort for the caller, never a reason to stop publishing. Blocking: async
  code runs it in a worker thread.
- `StateStore.load` returns the saved state, or None when there is none or it cannot be used:
  unreadable, not JSON (or nested too deeply), another format, a newer version, a saved_at that
  is not a time (NaN, 1e400), or any invalid name or address. Such
  a file is reported in the log (with why) and otherwise ignored; it is left in place for the
  operator and simply replaced by the next save. A decoded state holds a valid `RecordSet`
  (sorted, unique names), so the DNS sink can serve it as it is.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from nodehosts.adapters.atomicfile import fsync_directory, replace_file
from nodehosts.core.model import Host, RecordSet
from nodehosts.core.names import name_problem
from nodehosts.core.records import address_problem, address_sort_key

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STATE_FILE_NAME",
    "SavedState",
    "StateError",
    "StateFormatError",
    "StateStore",
    "decode_state",
    "encode_state",
]

log = structlog.get_logger(__name__)

FORMAT = "nodehosts-state"
FORMAT_VERSION = 1
STATE_FILE_NAME = "records.json"
_MODE = 0o644
_DIRECTORY_MODE = 0o755
# 9999-12-31T23:59:59Z: the last time datetime can show (the log and dump print saved_at).
_LATEST_TIMESTAMP = 253_402_300_799


@dataclass(frozen=True, slots=True)
class SavedState:
    """A published record set and where it stood when it was saved."""

    records: RecordSet
    saved_at: float  # Unix time of the save
    generation: int
    resource_version: str | None = None


class StateError(Exception):
    """The state file could not be written; the message names the path and the cause."""


class StateFormatError(ValueError):
    """The bytes are not a state this version can use; the message says why."""


def encode_state(state: SavedState) -> bytes:
    """The file's bytes: deterministic JSON, one host per line for a readable diff."""
    hosts = [
        json.dumps(
            {
                "names": list(host.names),
                "addresses": [str(address) for address in host.addresses],
                "origin": host.origin,
                "node": host.node,
            },
            ensure_ascii=True,
        )
        for host in state.records.hosts
    ]
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "saved_at": state.saved_at,
        "generation": state.generation,
        "resource_version": state.resource_version,
    }
    head = json.dumps(header, ensure_ascii=True)[:-1]
    body = ",\n  ".join(hosts)
    text = f'{head}, "hosts": [\n  {body}\n]}}\n' if hosts else f'{head}, "hosts": []}}\n'
    return text.encode("ascii")


def decode_state(data: bytes) -> SavedState:
    """Parse and validate a state file's bytes; `StateFormatError` says what is wrong."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise StateFormatError(f"not JSON: {error}") from None
    except RecursionError:
        raise StateFormatError("not a state file: JSON nested too deeply") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateFormatError(f'not a nodehosts state file (no "format": "{FORMAT}")')
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StateFormatError(f"invalid version {version!r}")
    if version > FORMAT_VERSION:
        raise StateFormatError(
            f"format version {version} is newer than this nodehosts reads ({FORMAT_VERSION})"
        )
    if version < 1:
        raise StateFormatError(f"invalid version {version!r}")
    saved_at = document.get("saved_at")
    if (
        isinstance(saved_at, bool)
        or not isinstance(saved_at, int | float)
        or not 0 <= saved_at <= _LATEST_TIMESTAMP  # also NaN and 1e400 (inf): not a time
    ):
        raise StateFormatError(f"invalid saved_at {saved_at!r}")
    generation = document.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise StateFormatError(f"invalid generation {generation!r}")
    resource_version = document.get("resource_version")
    if resource_version is not None and not isinstance(resource_version, str):
        raise StateFormatError(f"invalid resource_version {resource_version!r}")
    raw_hosts = document.get("hosts")
    if not isinstance(raw_hosts, list):
        raise StateFormatError('"hosts" is not a list')
    hosts = [_decode_host(index, raw) for index, raw in enumerate(raw_hosts)]
    seen: set[str] = set()
    for host in hosts:
        for name in host.names:
            if name in seen:
                raise StateFormatError(f"name {name!r} is published twice")
            seen.add(name)
    hosts.sort(key=lambda host: host.canonical)
    return SavedState(
        records=RecordSet(tuple(hosts)),
        saved_at=float(saved_at),
        generation=generation,
        resource_version=resource_version,
    )


def _decode_host(index: int, raw: Any) -> Host:
    where = f"hosts[{index}]"
    if not isinstance(raw, dict):
        raise StateFormatError(f"{where}: not an object")
    names = raw.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise StateFormatError(f"{where}: names must be a non-empty list of strings")
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            raise StateFormatError(f"{where}: invalid name {name!r}: {problem}")
    texts = raw.get("addresses")
    if not isinstance(texts, list) or not texts or not all(isinstance(a, str) for a in texts):
        raise StateFormatError(f"{where}: addresses must be a non-empty list of strings")
    addresses = []
    for text in texts:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise StateFormatError(f"{where}: invalid address {text!r}") from None
        problem = address_problem(address)
        if problem is not None:
            raise StateFormatError(f"{where}: address {text} {problem}")
        addresses.append(address)
    origin = raw.get("origin")
    node = raw.get("node")
    if origin == "node":
        if not isinstance(node, str) or not node:
            raise StateFormatError(f"{where}: a node host needs its node name")
    elif origin == "static":
        if node is not None:
            raise StateFormatError(f"{where}: a static host has no node")
    else:
        raise StateFormatError(f"{where}: invalid origin {origin!r}")
    return Host(
        names=tuple(names),
        addresses=tuple(sorted(set(addresses), key=address_sort_key)),
        origin=origin,
        node=node,
    )


class StateStore:
    """Saves and loads the state file in `directory`; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._path = self._directory / STATE_FILE_NAME

    @property
    def path(self) -> Path:
        return self._path

    def save(self, state: SavedState) -> None:
        """Replace the state file atomically with `state` (blocking: fsync)."""
        data = encode_state(state)
        try:
            self._directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
            self._replace(data)
        except OSError as error:
            raise StateError(
                f"cannot save state {self._path}: {error.strerror or error}"
                + (f": {error.filename}" if error.filename else "")
            ) from None

    def _replace(self, data: bytes) -> None:
        replace_file(self._path, data, mode=_MODE)
        try:
            fsync_directory(self._directory)
        except OSError as error:
            log.warning("state_directory_fsync_failed", path=str(self._directory), error=str(error))

    def load(self) -> SavedState | None:
        """The saved state, or None when there is none or it is unusable (logged)."""
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            log.info("state_absent", path=str(self._path))
            return None
        except OSError as error:
            log.warning("state_ignored", path=str(self._path), reason=error.strerror or str(error))
            return None
        try:
            state = decode_state(data)
        except StateFormatError as error:
            log.warning("state_ignored", path=str(self._path), reason=str(error))
            return None
        log.info(
            "state_loaded",
            path=str(self._path),
            hosts=len(state.records),
            generation=state.generation,
            saved_at=state.saved_at,
        )
        return state
