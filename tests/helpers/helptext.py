"""What an argparse `--help` output lists, for checking the man page against the real program.

Contract: `help_options(text)` is every option string (`-h`, `--dns-listen`, ...) on the option
lines of a `--help` output; `help_commands(text)` the subcommands listed under the COMMAND
positional of `nodehosts --help`.
"""

from __future__ import annotations

import re

__all__ = ["help_commands", "help_options"]


def help_options(text: str) -> set[str]:
    """Every option string in the option lines of an argparse --help output."""
    options: set[str] = set()
    for line in text.splitlines():
        match = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if match:
            options.update(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", match.group(1)))
    return options


def help_commands(text: str) -> list[str]:
    """The subcommands listed under COMMAND in `nodehosts --help`."""
    section = text.split("positional arguments:", 1)[-1].split("\n\n", 1)[0]
    commands = re.findall(r"(?m)^    ([a-z][\w-]*)(?:\s{2,}|$)", section)
    assert commands, f"no commands in nodehosts --help:\n{text}"
    return commands
