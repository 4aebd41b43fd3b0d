"""The repository's generated docs are current: the man page and the shell completion."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
MAN_PAGE = TOP / "docs" / "nodehosts.1"


def render_man_page() -> str:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    return subprocess.run(
        [sys.executable, str(TOP / "docs" / "mkman.py")],
        capture_output=True, text=True, check=True, env=env, cwd=TOP,
    ).stdout  # fmt: skip


def test_docs_man_page_is_what_mkman_generates() -> None:
    """docs/nodehosts.1 is the page the package ships for this code (`make docs` rewrites it)."""
    assert MAN_PAGE.read_text() == render_man_page(), "docs/nodehosts.1 is stale: run make docs"


def test_man_page_files_name_both_rbac_manifests_and_the_examples() -> None:
    """FILES lists what the package installs for the operator to apply or copy."""
    files = render_man_page().split(".SH FILES", 1)[1].split(".SH ", 1)[0]
    for path in (
        "/usr/share/nodehosts/rbac.yaml",
        "/usr/share/nodehosts/rbac\\-csr.yaml",
        "/usr/share/doc/nodehosts/examples/",
    ):
        assert path in files


COMPLETION = TOP / "docs" / "completion"


def complete_in_bash(*words: str) -> list[str]:
    """COMPREPLY of docs/completion/nodehosts.bash for the command line `words` (last: partial)."""
    line = " ".join(words)
    program = f"""
source {COMPLETION / "nodehosts.bash"}
COMP_WORDS=({line})
COMP_CWORD={len(words) - 1}
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
_shtab_nodehosts nodehosts "{words[-1]}" "{words[-2]}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    return sorted(result.stdout.split())


def test_bash_completion_is_current_for_every_command_and_option() -> None:
    """The shipped bash completion offers exactly today's commands and each one's options
    (a stale file after a CLI change fails here: `make docs` regenerates it)."""
    from nodehosts.cli import make_parser

    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert complete_in_bash("nodehosts", "") == sorted(commands.choices)
    for name, sub in commands.choices.items():
        options = sorted(o for a in sub._actions for o in a.option_strings if o.startswith("--"))
        offered = [o for o in complete_in_bash("nodehosts", name, "--") if o.startswith("--")]
        assert offered == options, f"nodehosts {name}: run make docs"


def test_bash_completion_completes_choices() -> None:
    """A flag's choices complete: `--log-level w` -> warning, `d` -> demo dump."""
    assert complete_in_bash("nodehosts", "d") == ["demo", "dump"]
    assert complete_in_bash("nodehosts", "run", "--log-level", "w") == ["warning"]


def test_zsh_completion_parses_and_names_every_command() -> None:
    """The shipped zsh completion is valid zsh and knows every command and its options."""
    from nodehosts.cli import make_parser

    if shutil.which("zsh") is None:
        message = "needs zsh (scripts/system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    script = COMPLETION / "_nodehosts"
    subprocess.run(["zsh", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#compdef nodehosts")
    commands = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        block = text.split(f"_shtab_nodehosts_{name.replace('-', '_')}_options=(", 1)[1]
        block = block.split("\n)", 1)[0]
        for option in (o for a in sub._actions for o in a.option_strings if o.startswith("--")):
            spelled = re.search(rf'["{{,*]{re.escape(option)}[\\[,}}"]', block)
            assert spelled, f"zsh completion of nodehosts {name} lacks {option}: run make docs"
