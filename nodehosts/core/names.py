"""What a valid DNS host name is: the one validator the record policy, the static hosts parser
and the saved-state reader share, so they cannot disagree about a name.

Contract: names are RFC 1123 host names, checked already lower-cased (by `fold`: only ASCII
is folded, a non-ASCII name is invalid): labels of 1-63 characters from
a-z, 0-9 and '-', not starting or ending with '-', at most 253 characters in all, no trailing
dot. Pure; answers are cached, as the same names are checked on every rebuild.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

MAX_NAME_LENGTH: Final = 253
MAX_LABEL_LENGTH: Final = 63
# Longest domain under which every valid single-label name still fits in MAX_NAME_LENGTH.
MAX_DOMAIN_LENGTH: Final = MAX_NAME_LENGTH - MAX_LABEL_LENGTH - 1

_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LABEL_RE: Final = re.compile(_LABEL)


def fold(name: str) -> str:
    """`name` lower-cased if it is ASCII, else as it is (and then invalid): str.lower() would
    fold some non-ASCII letters into ASCII ones (the Kelvin sign into 'k'), making two
    different names one."""
    return name.lower() if name.isascii() else name


@lru_cache(maxsize=16384)
def name_problem(name: str) -> str | None:
    """Why `name` (already lower-cased) is not a valid RFC 1123 host name, or None if it is."""
    if _NAME_RE.fullmatch(name) is not None and len(name) <= MAX_NAME_LENGTH:
        return None
    # Slow path, only for invalid names: say exactly what is wrong.
    if not name:
        return "empty name"
    if not name.isascii():
        return "not ASCII"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    for label in name.split("."):
        if not label:
            return "empty label (leading, trailing or double dot)"
        problem = label_problem(label)
        if problem is not None:
            return problem
    return "not a host name"  # pragma: no cover - every failure is caught above


def label_problem(label: str) -> str | None:
    """Why `label` (already lower-cased) is not one valid host name label, or None if it is."""
    if _LABEL_RE.fullmatch(label) is not None:
        return None
    if not label:
        return "empty label"
    if len(label) > MAX_LABEL_LENGTH:
        return f"label {label[:20]!r}... longer than {MAX_LABEL_LENGTH} characters"
    if label.startswith("-") or label.endswith("-"):
        return f"label {label!r} starts or ends with '-'"
    return f"label {label!r} has characters other than a-z, 0-9 and '-'"


def domain_problem(domain: str) -> str | None:
    """Why `domain` (lower-cased, no trailing dot) cannot be the records' domain, or None: a
    valid name short enough that every single-label name under it is still a valid name."""
    problem = name_problem(domain)
    if problem is None and len(domain) > MAX_DOMAIN_LENGTH:
        problem = f"longer than {MAX_DOMAIN_LENGTH} characters"
    return problem


def is_under(name: str, suffix: str) -> bool:
    """Whether `name` lies strictly below `suffix`, label-aligned (`evilnode.internal` is not
    under `node.internal`)."""
    return name.endswith(suffix) and name[-len(suffix) - 1 : -len(suffix)] == "."
