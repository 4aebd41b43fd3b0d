"""How `nodehosts dump` shows a state: kubectl-style tables, YAML, JSON, hosts text, and the
`--watch` change lines.

Contract: pure functions from the dump's JSON-able state (the daemon's answer or a fresh
LIST, nodehosts.core.report's shape) to text; nothing here reads sockets or the clock.
Colour is the caller's choice (`use_colour`): ANSI only when it says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

OUTPUTS = ("table", "wide", "hosts", "json", "yaml")
# Outputs built from the JSON report (the others from the hosts text).
REPORT_OUTPUTS = frozenset({"table", "wide", "json", "yaml"})

GREEN, RED, YELLOW, DIM, RESET = "\033[32m", "\033[31m", "\033[33m", "\033[2m", "\033[0m"


def use_colour(stream: IO[str]) -> bool:
    """Colour on a terminal; NO_COLOR (https://no-color.org) turns it off, FORCE_COLOR on."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, colour: str, *, enabled: bool) -> str:
    return f"{colour}{text}{RESET}" if enabled else text


def _columns(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, like kubectl get."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def render_table(state: Mapping[str, Any], *, wide: bool = False) -> str:
    """One row per node: NAME, ADDRESSES, PUBLISHED, REASON (wide: READY, SCHEDULABLE, NAMES)."""
    header = ["NAME", "ADDRESSES", "PUBLISHED", "REASON"]
    if wide:
        header += ["READY", "SCHEDULABLE", "NAMES"]
    rows = [header]
    for node in state.get("nodes", []):
        row = [
            str(node.get("name", "")),
            ",".join(node.get("addresses") or []) or "<none>",
            _yes_no(node.get("published")),
            str(node.get("reason") or "-"),
        ]
        if wide:
            row += [
                _yes_no(node.get("ready")),
                _yes_no(not node.get("unschedulable")),
                ",".join(node.get("names") or []) or "<none>",
            ]
        rows.append(row)
    if len(rows) == 1:
        return "No nodes.\n"
    return _columns(rows)


def render_yaml(state: Mapping[str, Any]) -> str:
    """The JSON report as YAML (PyYAML, which the kubernetes client already depends on)."""
    import yaml

    return str(yaml.safe_dump(dict(state), sort_keys=False, default_flow_style=False))


def render(state: dict[str, Any], output: str) -> str:
    """The text of `dump -o OUTPUT` for `state`."""
    if output in ("table", "wide"):
        return render_table(state, wide=output == "wide")
    if output in ("json", "yaml"):
        state = {key: value for key, value in state.items() if key != "text"}
        if output == "yaml":
            return render_yaml(state)
        return json.dumps(state, indent=2) + "\n"
    return str(state.get("text", ""))


def host_lines(text: str) -> list[str]:
    """The record lines of a hosts text, without comments and blank lines."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def change_lines(before: Iterable[str], after: Iterable[str], *, colour: bool) -> list[str]:
    """`- line` for every record line gone, `+ line` for every new one, removals first, each
    group in the hosts file's order (a moved address shows as - old, + new)."""
    old, new = list(before), list(after)
    old_set, new_set = set(old), set(new)
    out = [paint(f"- {line}", RED, enabled=colour) for line in old if line not in new_set]
    out += [paint(f"+ {line}", GREEN, enabled=colour) for line in new if line not in old_set]
    return out
