"""Chunked / SortedChunks: the record index's sorted hosts and decisions, changed one item at
a time, published as views that share the unchanged chunks (issue 16)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodehosts.core.chunks import CHUNK, Chunked, SortedChunks, chunked


class Item:
    """A keyed item compared by identity, so `remove` must find the very object."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Item({self.key!r})"


def key(item: Item) -> str:
    return item.key


@given(
    st.lists(
        st.tuples(st.sampled_from(["insert", "remove", "replace"]), st.integers(0, 60)),
        max_size=400,
    ),
    st.integers(0, 300),
)
def test_sorted_chunks_follow_a_sorted_list_and_views_never_change(
    steps: list[tuple[str, int]], start: int
) -> None:
    """Inserts (keys repeated, so equal keys sit side by side across chunk edges), removals of
    one exact item and replacements, against a plain sorted list: after every step the view
    reads the list, and every view taken earlier still reads what it read then."""
    model = sorted((Item(f"k{n % 61:02d}") for n in range(start)), key=key)
    chunks = SortedChunks(model, key)
    views: list[tuple[Chunked[Item], list[Item]]] = []
    rng = random.Random(len(steps))
    for action, number in steps:
        name = f"k{number:02d}"
        same = [item for item in model if item.key == name]
        if action == "insert" or not same:
            item = Item(name)
            at = next((i for i, other in enumerate(model) if other.key >= name), len(model))
            model.insert(at, item)
            chunks.insert(item)
        elif action == "remove":
            victim = rng.choice(same)
            model.remove(victim)
            chunks.remove(victim)
        else:
            old, new = rng.choice(same), Item(name)
            model[model.index(old)] = new
            chunks.replace(old, new)
        view = chunks.view()
        assert list(view) == model
        assert len(view) == len(chunks) == len(model)
        assert chunks.find(name) is next((i for i in model if i.key == name), None)
        views.append((view, list(model)))
    for view, then in views:
        assert list(view) == then


def test_a_change_shares_every_chunk_it_does_not_touch() -> None:
    items = [Item(f"k{n:05d}") for n in range(20 * CHUNK)]
    chunks = SortedChunks(items, key)
    before = chunks.view()
    assert chunks.view() is before  # no change: the same view
    chunks.replace(items[700], Item(items[700].key))
    after = chunks.view()
    shared = sum(a is b for a, b in zip(before._chunks, after._chunks, strict=True))
    assert shared == len(before._chunks) - 1
    assert before != after
    assert list(before) == items


def test_chunked_reads_and_compares_like_a_tuple_of_its_items() -> None:
    items = tuple(range(3 * CHUNK + 5))
    view = chunked(items)
    other = Chunked((items[:7], items[7:100], items[100:]))  # other chunk edges
    assert view == items and items == view
    assert view == other and hash(view) == hash(other) == hash(items)
    assert view != items[:-1] and view != (*items[:-1], -1)
    assert view != chunked((*items[:-1], -1))
    assert [view[i] for i in range(len(items))] == list(items)
    assert view[-1] == items[-1] and view[5:9] == items[5:9] and view[::-1] == items[::-1]
    with pytest.raises(IndexError):
        view[len(items)]
    assert Chunked(()) == () and len(Chunked(())) == 0


def test_removing_an_item_that_is_not_there_says_so() -> None:
    chunks = SortedChunks([Item("a")], key)
    with pytest.raises(ValueError, match="'a'"):
        chunks.remove(Item("a"))
    with pytest.raises(ValueError, match="'b'"):
        chunks.replace(Item("b"), Item("b"))
