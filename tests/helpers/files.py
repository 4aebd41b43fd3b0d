"""Files a daemon under test writes or watches: read them while they may not exist yet, wait for
a line, and change them the way an editor does.

Contract:
- `read_text_or_empty(path)` is the file's text, or "" while it does not exist.
- `wait_for_line(path, line)` polls until `line` is one of the file's lines (with
  `present=False`: until it is not) and returns the text that satisfied it; at the deadline it
  fails naming the line and the file (see `polling.wait_until`).
- `replace_by_rename(path, text)` is an editor's save: a temp file next to `path`, renamed over it
  (a new inode, as vim and most editors do).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.polling import wait_until

__all__ = ["read_text_or_empty", "replace_by_rename", "wait_for_line"]


def read_text_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def wait_for_line(path: Path, line: str, *, present: bool = True, timeout: float = 15) -> str:
    return wait_until(
        lambda: read_text_or_empty(path),
        until=lambda text: (line in text.splitlines()) == present,
        timeout=timeout,
        what=f"{line!r} {'in' if present else 'gone from'} {path}",
    )


def replace_by_rename(path: Path, text: str) -> None:
    """An editor's save: write a temp file and rename it over the original."""
    temp = path.with_name(f".{path.name}.swp")
    temp.write_text(text)
    os.rename(temp, path)
