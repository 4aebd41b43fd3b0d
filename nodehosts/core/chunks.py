"""A long sorted sequence that changes a few items at a time, and read-only views of it that
cost O(n / CHUNK) to take instead of a copy of every item.

Contract:

- `Chunked` is an immutable `Sequence`: a tuple of tuples (chunks) read as one sequence. It
  equals (and hashes like) any sequence of the same items in the same order, a plain tuple
  included, whatever the chunk boundaries. Two views of one `SortedChunks` share the chunks
  that did not change, so comparing them costs a pointer per shared chunk.
- `SortedChunks` is the owner's mutable side, kept sorted by a key the owner gives with each
  item. `view()` returns a `Chunked` of the current items; a change afterwards replaces the
  one chunk it touches, never a chunk a view holds.

Why: the record index published its hosts and decisions as tuples, one copy of each per Node
change; at 5000 Nodes the copies and freeing the previous ones were 15% of the event loop's
time per change, and they grow with the cluster (issue 16).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Generic, TypeVar, overload

T = TypeVar("T")

# Items per chunk: a change rebuilds one chunk (up to 2 * CHUNK items) and the view's outer
# tuple (n / CHUNK pointers).
CHUNK: Final = 64


class Chunked(Sequence[T]):
    """An immutable sequence kept as chunks; see the module docstring."""

    __slots__ = ("_chunks", "_len", "_starts")

    def __init__(self, chunks: tuple[tuple[T, ...], ...], length: int | None = None) -> None:
        self._chunks = chunks
        self._len = sum(map(len, chunks)) if length is None else length
        self._starts: list[int] | None = None  # each chunk's first index, made when indexed

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[T]:
        return itertools.chain.from_iterable(self._chunks)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("Chunked index out of range")
        if self._starts is None:
            self._starts = list(itertools.accumulate(map(len, self._chunks), initial=0))
        chunk = bisect.bisect_right(self._starts, index) - 1
        return self._chunks[chunk][index - self._starts[chunk]]

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, Chunked):
            if self._len != other._len:
                return False
            mine, theirs = self._chunks, other._chunks
            if len(mine) == len(theirs) and all(map(_same_length, mine, theirs)):
                return mine == theirs  # shared chunks compare by identity first
            return tuple(self) == tuple(other)
        if isinstance(other, tuple | list):
            return len(other) == self._len and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Chunked({tuple(self)!r})"


def _same_length(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b)


def chunked(items: Sequence[T]) -> Chunked[T]:
    """`items` as a `Chunked` of CHUNK-sized chunks."""
    return Chunked(
        tuple(tuple(items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)), len(items)
    )


class SortedChunks(Generic[T]):
    """Items sorted by a string key, changed in place one at a time (see the module
    docstring). Several items may share a key for a moment (an owner that adds the new item
    before removing the old one): `remove` takes the very item."""

    def __init__(self, items: Sequence[T], key: Callable[[T], str]) -> None:
        self._key = key
        self._chunks: list[tuple[T, ...]] = []
        self._keys: list[list[str]] = []  # per chunk, its items' keys
        self._firsts: list[str] = []  # each chunk's first key, for bisect
        self._len = 0
        self._view: Chunked[T] | None = None
        for i in range(0, len(items), CHUNK):
            part = tuple(items[i : i + CHUNK])
            self._chunks.append(part)
            self._keys.append([key(item) for item in part])
            self._firsts.append(self._keys[-1][0])
        self._len = len(items)

    def __len__(self) -> int:
        return self._len

    def view(self) -> Chunked[T]:
        """The current items; O(n / CHUNK), and the same object until the next change."""
        if self._view is None:
            self._view = Chunked(tuple(self._chunks), self._len)
        return self._view

    def find(self, key: str) -> T | None:
        """The first item with this key, or None."""
        chunk = max(0, bisect.bisect_left(self._firsts, key) - 1)
        while chunk < len(self._chunks):
            keys = self._keys[chunk]
            at = bisect.bisect_left(keys, key)
            if at < len(keys):
                return self._chunks[chunk][at] if keys[at] == key else None
            chunk += 1
        return None

    def insert(self, item: T) -> None:
        """Add `item` before any item with the same key."""
        key = self._key(item)
        self._view = None
        self._len += 1
        if not self._chunks:
            self._chunks.append((item,))
            self._keys.append([key])
            self._firsts.append(key)
            return
        chunk = max(0, bisect.bisect_left(self._firsts, key) - 1)
        keys = self._keys[chunk]
        at = bisect.bisect_left(keys, key)
        part = self._chunks[chunk]
        part = (*part[:at], item, *part[at:])
        keys.insert(at, key)
        self._firsts[chunk] = keys[0]
        if len(part) > 2 * CHUNK:  # split, so a change stays O(CHUNK)
            half = len(part) // 2
            self._chunks[chunk : chunk + 1] = [part[:half], part[half:]]
            self._keys[chunk : chunk + 1] = [keys[:half], keys[half:]]
            self._firsts[chunk : chunk + 1] = [keys[0], keys[half]]
        else:
            self._chunks[chunk] = part

    def remove(self, item: T) -> None:
        """Remove this very item (ValueError if it is not here)."""
        chunk, at = self._position(item)
        keys, part = self._keys[chunk], self._chunks[chunk]
        self._view = None
        self._len -= 1
        del keys[at]
        if not keys:
            del self._chunks[chunk], self._keys[chunk], self._firsts[chunk]
        else:
            self._chunks[chunk] = part[:at] + part[at + 1 :]
            self._firsts[chunk] = keys[0]

    def replace(self, old: T, new: T) -> None:
        """Put `new` where `old` is (the same key)."""
        chunk, at = self._position(old)
        part = self._chunks[chunk]
        self._view = None
        self._chunks[chunk] = (*part[:at], new, *part[at + 1 :])

    def swap(self, old: T | None, new: T | None) -> None:
        """Put `new` where `old` is: `insert` when there is no `old`, `remove` when there is no
        `new`, `replace` when both (the same key)."""
        if old is None:
            if new is not None:
                self.insert(new)
        elif new is None:
            self.remove(old)
        else:
            self.replace(old, new)

    def _position(self, item: T) -> tuple[int, int]:
        """(chunk, index in it) of this very item; ValueError if it is not here."""
        key = self._key(item)
        chunk = max(0, bisect.bisect_left(self._firsts, key) - 1)
        while chunk < len(self._chunks):
            keys, part = self._keys[chunk], self._chunks[chunk]
            at = bisect.bisect_left(keys, key)
            while at < len(keys) and keys[at] == key:
                if part[at] is item:
                    return chunk, at
                at += 1
            if at < len(keys):
                break
            chunk += 1
        raise ValueError(f"no such item with key {key!r}")
