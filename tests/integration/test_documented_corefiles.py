"""Every Corefile the project documents, extracted from where a reader copies it and run by the
real CoreDNS against the hosts file the real daemon writes.

Where the snippets live, and how each is found (a marker, so nothing is guessed):
- README.md and coredns/README.md: the fenced block right after `<!-- corefile: recommended`;
- nodehosts(1): the `.EX` block after the roff comment `.\\" corefile: recommended` in what
  docs/mkman.py renders (roff escapes undone);
- deploy/config.toml: the `#   ` comment lines after the comment naming `corefile: recommended`;
- coredns/Corefile: the lab's whole Corefile, installed unchanged by provisioning/lib/lb-files.sh
  (tests/provisioning/test_lb.py checks the rendered copy is byte-identical).
Every other block in those files that configures the `hosts` plugin fails the test: a snippet
cannot be added without the marker, so none escapes being run.

Each snippet is run with tests/helpers/coredns.py's loopback rewrite (ports, the hosts path, the
forward target) and must answer a bare node name and its FQDN, answer a node that joins within
the Corefile's reload (+ cache) interval, and forward other names to the loopback upstream.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.coredns import CoreDNS, change_ceiling, hosts_options, loopback_corefile
from tests.helpers.daemon import start_daemon
from tests.helpers.dnsmasq import Dnsmasq, stand_in_upstream
from tests.helpers.upstream import REPO

TOKEN = "documented-corefiles-token"
MARKER = "corefile: recommended"
HOSTS_DIRECTIVE = re.compile(r"^\s*hosts\s+/", re.M)
_joins = itertools.count(1)


def _markdown_blocks(path: Path) -> list[tuple[bool, str]]:
    """(marked, text) of every fenced block in a markdown file."""
    blocks: list[tuple[bool, str]] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("```"):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            marked = index > 0 and MARKER in lines[index - 1] and "<!--" in lines[index - 1]
            blocks.append((marked, "\n".join(lines[index + 1 : end]) + "\n"))
            index = end
        index += 1
    return blocks


def _manpage_blocks() -> list[tuple[bool, str]]:
    """(marked, text) of every .EX/.EE example in the rendered nodehosts(1)."""
    sys.path.insert(0, str(REPO / "docs"))
    import mkman

    page = mkman.render("0.0-test", "2026-01-01").splitlines()
    blocks: list[tuple[bool, str]] = []
    for index, line in enumerate(page):
        if line == ".EX":
            end = page.index(".EE", index)
            marked = MARKER in page[index - 1] and page[index - 1].startswith('.\\"')
            text = "\n".join(page[index + 1 : end]) + "\n"
            text = re.sub(r"^\\&", "", text, flags=re.M).replace("\\-", "-").replace("\\e", "\\")
            blocks.append((marked, text))
    return blocks


def _config_toml_blocks() -> list[tuple[bool, str]]:
    """The `#   ` comment block after each comment line that names the marker."""
    lines = (REPO / "deploy/config.toml").read_text().splitlines()
    blocks: list[tuple[bool, str]] = []
    for index, line in enumerate(lines):
        if line.startswith("#") and MARKER in line:
            body = list(itertools.takewhile(lambda t: t.startswith("#   "), lines[index + 1 :]))
            blocks.append((True, "".join(t[4:] + "\n" for t in body)))
    # Any other commented Corefile line (a hosts directive outside the marked blocks) counts too.
    marked_text = "".join(text for _, text in blocks)
    for line in lines:
        code = line.lstrip("#")
        if line.startswith("#") and HOSTS_DIRECTIVE.match(code) and code.strip() not in marked_text:
            blocks.append((False, line))
    return blocks


def documented() -> dict[str, list[tuple[bool, str]]]:
    """Every block that configures the hosts plugin, per source, with whether it is marked."""
    sources = {
        "README.md": _markdown_blocks(REPO / "README.md"),
        "coredns/README.md": _markdown_blocks(REPO / "coredns/README.md"),
        "nodehosts(1)": _manpage_blocks(),
        "deploy/config.toml": _config_toml_blocks(),
    }
    return {
        source: [(marked, text) for marked, text in blocks if HOSTS_DIRECTIVE.search(text)]
        for source, blocks in sources.items()
    }


def snippets() -> dict[str, str]:
    """The one marked snippet of each source, and the lab's Corefile."""
    found = {}
    for source, blocks in documented().items():
        marked = [text for is_marked, text in blocks if is_marked]
        assert len(marked) == 1, f"{source}: {len(marked)} marked Corefile snippets, expected 1"
        found[source] = marked[0]
    found["coredns/Corefile"] = (REPO / "coredns/Corefile").read_text()
    return found


SNIPPETS = snippets()


def test_every_documented_corefile_is_the_recommended_one() -> None:
    """No unmarked Corefile in the docs; all marked ones are the same text; the lab's Corefile
    configures the hosts plugin exactly like them (and adds acl, cache, log, health, ready)."""
    for source, blocks in documented().items():
        unmarked = [text for marked, text in blocks if not marked]
        assert not unmarked, f"{source} shows a Corefile without the `{MARKER}` marker"
    recommended = {text for source, text in SNIPPETS.items() if source != "coredns/Corefile"}
    assert len(recommended) == 1, "the documented Corefile snippets differ:\n" + "\n".join(
        f"--- {s}\n{t}" for s, t in SNIPPETS.items()
    )
    (snippet,) = recommended
    hosts_line = re.compile(r"^\s*hosts\s.*$", re.M)
    lab = SNIPPETS["coredns/Corefile"]
    assert hosts_line.findall(lab) == hosts_line.findall(snippet)
    assert hosts_options(lab) == hosts_options(snippet)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN, lab_node("controller-0", "10.240.0.10"), lab_node("worker-0", "10.240.0.101")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def hosts_file(api: FakeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The file the real daemon keeps up to date for the whole module."""
    workdir = tmp_path_factory.mktemp("nodehosts")
    path = workdir / "hosts" / "nodes.hosts"
    path.parent.mkdir()
    with start_daemon(api, workdir, "--hosts-file", str(path), token=TOKEN) as daemon:
        yield path
        assert daemon.process.poll() is None


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    """Knows upstream.example; NXDOMAIN for the rest of `internal`, like a public resolver."""
    server = stand_in_upstream(tmp_path_factory.mktemp("upstream"))
    server.args += ("--local=/internal/",)
    with server:
        yield server


@pytest.mark.parametrize("source", sorted(SNIPPETS))
def test_documented_corefile_answers_bare_names_and_fqdns_and_forwards(
    source: str,
    api: FakeApiServer,
    hosts_file: Path,
    upstream: Dnsmasq,
    tmp_path: Path,
) -> None:
    text = loopback_corefile(
        SNIPPETS[source], hosts_file=hosts_file, upstream=f"127.0.0.1:{upstream.port}"
    )
    ceiling = change_ceiling(SNIPPETS[source])
    with CoreDNS(text, tmp_path) as coredns:
        coredns.wait_for_answer("worker-0.node.internal", "A", ["10.240.0.101"], timeout=ceiling)
        assert coredns.dig("worker-0") == ["10.240.0.101"]
        assert coredns.dig("controller-0") == ["10.240.0.10"]
        assert coredns.dig("upstream.example") == ["192.0.2.7"]
        assert coredns.query("worker-404.node.internal").status == "NXDOMAIN"

        name, address = f"worker-{100 + next(_joins)}", f"10.240.0.{100 + next(_joins)}"
        api.add_object("nodes", lab_node(name, address))
        coredns.wait_for_answer(name, "A", [address], timeout=ceiling)
        assert coredns.dig(f"{name}.node.internal") == [address]


def test_a_node_internal_server_block_never_sees_bare_names(
    hosts_file: Path, upstream: Dnsmasq, tmp_path: Path
) -> None:
    """Why the zone is `.`: the shape the README used to show answers FQDNs only."""
    text = f"""\
node.internal:{{dns_port}} {{
    bind 127.0.0.1
    hosts {hosts_file} {{
        ttl 30
        reload 2s
        fallthrough
    }}
}}
.:{{dns_port}} {{
    bind 127.0.0.1
    forward . 127.0.0.1:{upstream.port}
}}
"""
    with CoreDNS(text, tmp_path) as coredns:
        coredns.wait_for_answer("worker-0.node.internal", "A", ["10.240.0.101"], timeout=30)
        bare = coredns.query("worker-0")
        assert bare.answer == ()
        assert bare.status == "REFUSED"  # the upstream's: it never heard of worker-0
