"""labelSelector and fieldSelector as the apiserver parses and applies them.

Contract: `parse_label_selector` takes `=`, `==`, `!=`, `in (...)`, `notin (...)`, `key` and
`!key` requirements joined by commas and raises `ApiStatus(400)` on what the apiserver rejects;
`parse_field_selector` takes `metadata.name` with `=`, `==`, `!=` (all a Node supports).
`Selector.matches(name, labels)` is their conjunction; `!=` and `notin` match objects without
the key, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nodehosts.testing.fake_apiserver.api import ApiStatus

__all__ = [
    "Requirement",
    "Selector",
    "parse_field_selector",
    "parse_label_selector",
    "parse_selector",
]


Op = Literal["=", "!=", "in", "notin", "exists", "!exists"]
# Longest token first: "a!=b" is not "a!" = "b", "a==b" is not "a" = "=b".
_COMPARISONS: tuple[tuple[str, Op], ...] = (("!=", "!="), ("==", "="), ("=", "="))


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        # "!=" and "notin" match objects without the key, like the real apiserver.
        return labels.get(self.key) not in self.values


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def parse_label_selector(text: str) -> tuple[Requirement, ...]:
    """Parse a labelSelector; raise ApiStatus(400) on syntax the real apiserver rejects."""
    if not text.strip():
        return ()
    requirements = []
    for part in _split_top_level(text):
        if not part:
            raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {text!r}")
        words = part.split()
        if len(words) >= 2 and words[1] in ("in", "notin"):
            rest = part.split(None, 2)[2] if len(part.split(None, 2)) == 3 else ""
            if not (rest.startswith("(") and rest.endswith(")")):
                raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {part!r}")
            values = frozenset(v.strip() for v in rest[1:-1].split(",") if v.strip())
            requirements.append(
                Requirement(words[0], "in" if words[1] == "in" else "notin", values)
            )
            continue
        for token, op in _COMPARISONS:
            if token in part:
                key, _, value = part.partition(token)
                requirements.append(Requirement(key.strip(), op, frozenset({value.strip()})))
                break
        else:
            if part.startswith("!"):
                requirements.append(Requirement(part[1:].strip(), "!exists"))
            else:
                requirements.append(Requirement(part, "exists"))
    for requirement in requirements:
        if not requirement.key or any(c in requirement.key for c in " ()!=,"):
            raise ApiStatus(400, "BadRequest", f"invalid label key in selector {text!r}")
    return tuple(requirements)


def parse_field_selector(text: str) -> tuple[Requirement, ...]:
    """Parse a fieldSelector; only `metadata.name` is a supported field (as for Nodes)."""
    if not text.strip():
        return ()
    requirements = []
    for part in _split_top_level(text):
        for token, op in _COMPARISONS:
            if token in part:
                key, _, value = part.partition(token)
                key = key.strip()
                if key != "metadata.name":
                    raise ApiStatus(400, "BadRequest", f'field label not supported: "{key}"')
                requirements.append(Requirement(key, op, frozenset({value.strip()})))
                break
        else:
            raise ApiStatus(400, "BadRequest", f"invalid field selector: {text!r}")
    return tuple(requirements)


@dataclass(frozen=True, slots=True)
class Selector:
    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        fields = {"metadata.name": name}
        return all(r.matches(labels) for r in self.labels) and all(
            r.matches(fields) for r in self.fields
        )


def parse_selector(query: Mapping[str, str]) -> Selector:
    """The selector of a LIST or WATCH request's query."""
    return Selector(
        parse_label_selector(query.get("labelSelector", "")),
        parse_field_selector(query.get("fieldSelector", "")),
    )
