"""README "Install on Debian", line by line, on booted Debian bookworm and trixie (systemd-nspawn).

The test reads the shell block of that README section and runs every line as written, with
only these stand-ins, each checked rather than skipped:

- `make deb` runs on this host with a python that fails ("No module named build") first on
  PATH and a bogus PYTHONPATH, as with pyenv: the package must build anyway.
  DEB_BUILD_OPTIONS=nocheck (the build-time tests run in test_deb_e2e.py).
- `sudo` is dropped (the container's minimal root has none; everything runs as root there),
  and apt answers yes (`APT::Get::Assume-Yes`, as a person would).
- `kubectl apply -f FILE`: the fake API server has no RBAC, so the test checks that FILE is
  where the README says, installed by the package.
- `nodehosts.kubeconfig` is written for the fake API server on the host's loopback.
- 127.0.0.1:53 becomes a free 127.0.153.N:53 (the container shares the host's network).

A README line the test does not know fails it, so the README and this test cannot drift.
The package is built once and installed on every suite of NODEHOSTS_E2E_SUITES (default
`bookworm trixie`, as test_deb_e2e.py), each from a fresh overlay of its cached root.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nspawn import Container, cached_root
from test_deb_e2e import NODES, SUITES, TOKEN, free_dns_address, prerequisites

pytestmark = pytest.mark.e2e

TOP = Path(__file__).resolve().parent.parent.parent
README = TOP / "README.md"


def install_lines() -> list[str]:
    """The commands of the README's "Install on Debian" block, comments stripped."""
    text = README.read_text()
    section = text.split("## Install on Debian", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "README's Install on Debian section has no code block"
    lines = []
    for raw in block.group(1).splitlines():
        line = re.sub(r"\s+# .*$", "", raw).strip()
        if line:
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    from nodehosts.testing.fake_apiserver import FakeApiServer, make_node

    server = FakeApiServer(tokens=[TOKEN], tls=True)
    for name, address in NODES.items():
        server.add_object("nodes", make_node(name, addresses=[address]))
    with server:
        yield server


def make_deb_with_a_broken_python_first(directory: Path) -> Path:
    """`make deb` as the README's first line, with a pyenv-like python first on PATH."""
    bad = directory / "pyenv-shims"
    bad.mkdir()
    for name in ("python3", "python"):
        script = bad / name
        script.write_text('#!/bin/sh\necho "No module named build" >&2\nexit 1\n')
        script.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bad}:{os.environ['PATH']}",
        "PYTHONPATH": str(directory / "nowhere"),
        "DEB_BUILD_OPTIONS": "nocheck",
    }
    result = subprocess.run(
        ["make", "deb"], cwd=TOP, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"make deb failed:\n{result.stdout}\n{result.stderr}"
    debs = sorted((TOP / "dist").glob("nodehosts_*_all.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    lines = install_lines()
    assert lines[0] == "make deb", lines
    return lines


@pytest.fixture(scope="module")
def deb(lines: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's `make deb`, once for every suite (the package is arch all)."""
    missing = prerequisites()
    if missing:
        message = f"end-to-end test needs: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return make_deb_with_a_broken_python_first(tmp_path_factory.mktemp("make-deb"))


@pytest.mark.parametrize("suite", SUITES)
def test_readme_install_on_debian(suite: str, api: Any, deb: Path, lines: list[str]) -> None:
    """Every line of the README's install block works on a fresh bookworm and trixie, as
    written."""
    address = free_dns_address()
    with Container(suite, cached_root(suite)) as c:
        c.run("chown", "_apt:root", "/var/cache/apt/archives/partial", check=False)
        c.path("/etc/dpkg/dpkg.cfg.d/e2e-unsafe-io").write_text("force-unsafe-io\n")
        c.path("/etc/apt/apt.conf.d/90e2e-yes").write_text('APT::Get::Assume-Yes "true";\n')
        c.run("apt-get", "update", "-q", timeout=300)
        (c.path("/root/dist")).mkdir()
        (c.path("/root/dist") / deb.name).write_bytes(deb.read_bytes())
        api.write_kubeconfig(c.path("/root/nodehosts.kubeconfig"), token=TOKEN)
        outputs: dict[str, str] = {}
        try:
            for line in lines[1:]:
                command = line.removeprefix("sudo ")
                if command.startswith("kubectl apply -f "):
                    manifest = command.split()[-1]
                    assert c.path(manifest).is_file(), f"{manifest}: not installed"
                    continue
                known = {"apt", "install", "sed", "systemctl", "nodehosts", "dig"}
                assert command.split()[0] in known, f"README line the test does not know: {line!r}"
                command = command.replace("127.0.0.1", address)
                result = c.sh(
                    f"cd /root && {command}",
                    env={"DEBIAN_FRONTEND": "noninteractive"},
                    timeout=600,
                    check=False,
                )
                assert result.returncode == 0, (
                    f"{line!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
                )
                outputs[command.split()[0]] = result.stdout
        except BaseException:
            print(c.diagnostics())
            raise
        assert f'listen = ["{address}:53"]' in c.path("/etc/nodehosts/config.toml").read_text()
        for name in NODES:
            assert name in outputs["nodehosts"], outputs["nodehosts"]
        assert outputs["dig"].split() == [NODES["worker-0"]], outputs["dig"]
        state = c.run("systemctl", "is-active", "nodehosts", check=False).stdout.strip()
        assert state == "active", shlex.quote(state)
        # What the README points to beside the commands: README.Debian, the examples, the
        # man page, and the shell completion, which completes in the installed bash.
        for path in (
            "/usr/share/doc/nodehosts/README.Debian",
            "/usr/share/doc/nodehosts/examples/Corefile",
            "/usr/share/doc/nodehosts/examples/dnsmasq.conf",
            "/usr/share/zsh/vendor-completions/_nodehosts",
        ):
            assert c.path(path).is_file() or c.path(path + ".gz").is_file(), path
        assert (
            c.path("/usr/share/doc/nodehosts/examples/Corefile").read_text()
            == (TOP / "coredns" / "Corefile").read_text()
        )
        completed = c.run(
            "bash",
            "-c",
            "source /usr/share/bash-completion/completions/nodehosts; "
            "COMP_WORDS=(nodehosts d); COMP_CWORD=1; _shtab_nodehosts nodehosts d nodehosts; "
            'echo "${COMPREPLY[@]}"',
        )
        assert sorted(completed.stdout.split()) == ["demo", "dump"], completed
