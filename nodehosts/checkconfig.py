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

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodehosts.config import (
    FILE_KEYS,
    SETTINGS,
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
    import difflib  # (only for a misspelt key; the daemon's start imports this module)

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
                SETTINGS[name].check(f"{section}.{key}", value)
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
            SETTINGS[name].check(flag_name(name), value)
        except ConfigError as error:  # (the flag is where: said once)
            problems.append(Problem(flag_name(name), error.reason))
        else:
            good[name] = value
    return problems, good


def path_problems(settings: Settings) -> list[ConfigError]:
    """The directories and files the settings name that this machine lacks (cheap: no
    kubeconfig is parsed). The daemon checks these at start too (nodehosts.cli)."""
    out: list[ConfigError] = []
    hosts_file = settings.hosts_file
    if hosts_file is not None and not hosts_file.parent.is_dir():
        reason = f"directory {hosts_file.parent} does not exist (got {str(hosts_file)!r})"
        out.append(ConfigError.at("hosts.file", reason, key="hosts_file"))
    static_hosts = settings.static_hosts
    if static_hosts is not None and not static_hosts.is_file():
        reason = f"no such file (got {str(static_hosts)!r})"
        out.append(ConfigError.at("records.static_hosts", reason, key="static_hosts"))
    kubeconfig = settings.kubeconfig
    if kubeconfig is not None and not kubeconfig.is_file():
        reason = f"no such file (got {str(kubeconfig)!r})"
        out.append(ConfigError.at("kubernetes.kubeconfig", reason, key="kubeconfig"))
    return out


def machine_problems(settings: Settings) -> list[ConfigError]:
    """What this machine must have for the config: its directories, files, and a kubeconfig
    that loads and names a cluster with a server."""
    out = path_problems(settings)
    kubeconfig = settings.kubeconfig
    if kubeconfig is not None and kubeconfig.is_file():
        from nodehosts.adapters.kube.config import KubeConfigError, load_client_configuration

        try:
            load_client_configuration(kubeconfig)
        except KubeConfigError as error:
            out.append(ConfigError.at("kubernetes.kubeconfig", str(error), key="kubeconfig"))
    return out


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

    def where_is(name: str | None) -> str:
        """Where a setting is given: its flag when given, else its line in the file."""
        if name is not None and flags.get(name) is not None:
            return flag_name(name)
        setting = SETTINGS.get(name) if name is not None else None
        number = lines.get((setting.section, setting.toml_key)) if setting else None
        if path is not None and number:
            return f"{path}:{number}"
        return str(path) if path is not None else "flags"

    try:
        build_settings(data, flags, config_path=path)
    except ConfigError as error:  # cross-key rules (each key alone was fine)
        problems.append(Problem(where_is(error.key), str(error)))
    if offline:
        return problems
    # The machine's side needs only the paths (which no cross-key rule involves).
    paths = {"hosts_file", "static_hosts", "kubeconfig"}
    path_data: dict[str, Any] = {}
    for name in paths:
        setting = SETTINGS[name]
        if setting.toml_key in data.get(setting.section, {}):
            value = data[setting.section][setting.toml_key]
            path_data.setdefault(setting.section, {})[setting.toml_key] = value
    settings = build_settings(path_data, {k: v for k, v in flags.items() if k in paths})
    for found in machine_problems(settings):
        where = where_is(found.key)
        # (a flag names the key already)
        problems.append(Problem(where, found.reason if where.startswith("--") else str(found)))
    return problems
