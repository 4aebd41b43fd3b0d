"""The one host-name validator (nodehosts.core.names); name_problem's cases are in
test_records.py, where the record policy applies them to Nodes."""

from __future__ import annotations

import pytest

from nodehosts.core.names import MAX_DOMAIN_LENGTH, domain_problem, fold, is_under, label_problem


def test_only_ascii_names_are_folded() -> None:
    """The Kelvin sign lower-cases to an ASCII 'k' in Python: folding it would make
    `\u212aube` another spelling of `kube`; it stays as written, and invalid."""
    assert fold("Worker-0.Node.Internal") == "worker-0.node.internal"
    assert fold("\u212aube") == "\u212aube"


@pytest.mark.parametrize(
    ("name", "suffix", "under"),
    [
        ("worker-0.node.internal", "node.internal", True),
        ("a.b.node.internal", "node.internal", True),
        ("node.internal", "node.internal", False),  # equal is not under
        ("evilnode.internal", "node.internal", False),  # not label-aligned
        ("node.internal.evil", "node.internal", False),
    ],
)
def test_under_is_strictly_below_on_a_label_boundary(name: str, suffix: str, under: bool) -> None:
    assert is_under(name, suffix) is under


def test_a_domain_leaves_room_for_one_full_label() -> None:
    """Every valid single-label name under the domain must still be a valid name (253)."""
    longest = ".".join(["a" * 63, "b" * 63, "c" * 61])
    assert len(longest) == MAX_DOMAIN_LENGTH == 189
    assert domain_problem(longest) is None
    assert domain_problem(longest + "c") == "longer than 189 characters"
    assert domain_problem("node..internal") == "empty label (leading, trailing or double dot)"


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("hostmaster", None),
        ("", "empty label"),
        ("a" * 64, f"label {'a' * 20!r}... longer than 63 characters"),
        ("-a", "label '-a' starts or ends with '-'"),
        ("a_b", "label 'a_b' has characters other than a-z, 0-9 and '-'"),
        ("a\n", "label 'a\\n' has characters other than a-z, 0-9 and '-'"),  # no $ before \n
        ("a.b", "label 'a.b' has characters other than a-z, 0-9 and '-'"),
    ],
)
def test_one_label(label: str, problem: str | None) -> None:
    assert label_problem(label) == problem
