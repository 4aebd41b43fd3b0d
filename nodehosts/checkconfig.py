"""`nodehosts check-config`: every problem of a config file and the flags, at once.

Contract: `check(path, overrides, offline=...)` returns a list of `Problem`s (empty: the
config is good), each with where it is (`FILE:LINE`, or the flag) and a message that names the
key and the value, like ConfigError's. It validates each key on its own (so one bad value
does not hide the next), suggests the nearest known section or key for unknown ones
(difflib), then the whole (cross-key rules), then, unless `offline`, what only this machine
can tell: the directories and files the config names exist, and the kubeconfig parses and
names a cluster with a server. `offline` checks a config meant for another machine.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodehosts.config import (
    _VALIDATORS,
    FILE_KEYS,
    ConfigError,
    Settings,
    build_settings,
    flag_name,
)

_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


@dataclass(frozen=True, slots=True)
class Problem:
    where: str  # "FILE:LINE", "FILE" or a flag
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def key_lines(text: str) -> dict[tuple[str, str | None], int]:
    """(section, key) -> line number, and (section, None) -> its header's line."""
    lines: dict[tuple[str, str | None], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if match := _SECTION.match(line):
            section = match[1]
            lines.setdefault((section, None), number)
        elif match := _KEY.match(line):
            lines.setdefault((section, match[1]), number)
    return lines


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _file_problems(
    path: Path, data: Mapping[str, Any], lines: Mapping[tuple[str, str | None], int]
) -> tuple[list[Problem], dict[str, Any]]:
    """Problems of the file's sections and keys one by one, and its valid raw values."""
    sections = sorted({section for section, _ in FILE_KEYS})
    all_keys = [f"{section}.{key}" for section, key in FILE_KEYS]
    problems: list[Problem] = []
    good: dict[str, Any] = {}

    def at(section: str, key: str | None) -> str:
        number = lines.get((section, key)) or lines.get((section, None))
        return f"{path}:{number}" if number else str(path)

    for section, table in data.items():
        if section not in sections:
            if isinstance(table, dict):
                hint = _suggest(f"[{section}]", [f"[{s}]" for s in sections])
                problems.append(Problem(at(section, None), f"[{section}]: unknown section{hint}"))
            else:
                hint = _suggest(section, all_keys)
                problems.append(Problem(at("", section), f"{section}: unknown key{hint}"))
            continue
        if not isinstance(table, dict):
            message = f"{section}: expected a [{section}] table, got {table!r}"
            problems.append(Problem(at("", section), message))
            continue
        for key, value in table.items():
            name = FILE_KEYS.get((section, key))
            if name is None:
                in_section = [f"{section}.{k}" for s, k in FILE_KEYS if s == section]
                hint = _suggest(f"{section}.{key}", in_section) or _suggest(
                    f"{section}.{key}", all_keys
                )
                problems.append(Problem(at(section, key), f"{section}.{key}: unknown key{hint}"))
                continue
            try:
                _VALIDATORS[name](f"{section}.{key}", value)
            except ConfigError as error:
                problems.append(Problem(at(section, key), str(error)))
            else:
                good.setdefault(section, {})[key] = value
    return problems, good


def _flag_problems(overrides: Mapping[str, Any]) -> tuple[list[Problem], dict[str, Any]]:
    problems: list[Problem] = []
    good: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        try:
            _VALIDATORS[name](flag_name(name), value)
        except ConfigError as error:
            problems.append(Problem(flag_name(name), str(error).split(": ", 1)[-1]))
        else:
            good[name] = value
    return problems, good


def machine_problems(settings: Settings) -> list[str]:
    """What this machine must have for the config: its directories, files and kubeconfig."""
    out: list[str] = []
    if settings.hosts_file is not None and not settings.hosts_file.parent.is_dir():
        out.append(
            f"hosts.file: directory {settings.hosts_file.parent} does not exist "
            f"(got {str(settings.hosts_file)!r})"
        )
    if settings.static_hosts is not None and not settings.static_hosts.is_file():
        out.append(f"records.static_hosts: no such file (got {str(settings.static_hosts)!r})")
    if settings.kubeconfig is not None:
        out += kubeconfig_problems(settings.kubeconfig)
    return out


def kubeconfig_problems(path: Path) -> list[str]:
    """The kubeconfig exists, parses, and its current context names a cluster with a server."""
    if not path.is_file():
        return [f"kubernetes.kubeconfig: no such file (got {str(path)!r})"]
    from nodehosts.adapters.kube.config import KubeConfigError, load_client_configuration

    try:
        load_client_configuration(path)
    except KubeConfigError as error:
        return [f"kubernetes.kubeconfig: {error}"]
    return []


def check(
    path: Path | None, overrides: Mapping[str, Any], *, offline: bool = False
) -> list[Problem]:
    """Every problem of the file at `path` (None: no file) with the flags `overrides`."""
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    lines: dict[tuple[str, str | None], int] = {}
    if path is not None:
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return [Problem(str(path), "config file not found")]
        except OSError as error:
            return [Problem(str(path), f"config file: {error.strerror}")]
        except UnicodeDecodeError as error:
            return [Problem(str(path), f"config file is not UTF-8: {error.reason}")]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            match = _TOML_LINE.search(str(error))
            where = f"{path}:{match[1]}" if match else str(path)
            return [Problem(where, f"invalid TOML: {_TOML_LINE.sub('', str(error)).strip()}")]
        lines = key_lines(text)
        file_problems, data = _file_problems(path, data, lines)
        problems += file_problems
    flag_problems, flags = _flag_problems(overrides)
    problems += flag_problems

    def where_is(key: str) -> str:
        """A `section.key` from a message: its flag when given, else its line in the file."""
        section, _, name = key.partition(".")
        field = FILE_KEYS.get((section, name))
        if field is not None and flags.get(field) is not None:
            return flag_name(field)
        number = lines.get((section, name))
        if path is not None and number:
            return f"{path}:{number}"
        return str(path) if path is not None else "flags"

    try:
        build_settings(data, flags, config_path=path)
    except ConfigError as error:  # cross-key rules (each key alone was fine)
        problems.append(Problem(where_is(str(error).split(":", 1)[0]), str(error)))
    if offline:
        return problems
    # The machine's side needs only the paths (which no cross-key rule involves).
    paths = {"hosts_file", "static_hosts", "kubeconfig"}
    path_data: dict[str, Any] = {}
    for (section, key), field in FILE_KEYS.items():
        if field in paths and key in data.get(section, {}):
            path_data.setdefault(section, {})[key] = data[section][key]
    settings = build_settings(path_data, {k: v for k, v in flags.items() if k in paths})
    for message in machine_problems(settings):
        where = where_is(message.split(":", 1)[0])
        # (a flag names the key already)
        shown = message.split(": ", 1)[1] if where.startswith("--") else message
        problems.append(Problem(where, shown))
    return problems
