"""The real CoreDNS (built by scripts/upstream-bin) running a Corefile the project documents.

Contract:
- `loopback_corefile(text, hosts_file=..., upstream=...)` rewrites a documented Corefile so it
  runs here, and changes nothing else (every plugin and option stays as documented). The
  rewrite rules, each applied to every server block / directive:
  1. every server block listens on 127.0.0.1 at a port chosen by `CoreDNS.start` (the key's
     `:53`, or no port, becomes `:PORT`), and a `bind 127.0.0.1` line is added to it;
  2. the path after `hosts` (nodehosts' /var/lib/nodehosts/hosts/nodes.hosts) becomes
     `hosts_file`;
  3. the targets after `forward .` (a resolv.conf or resolver addresses) become `upstream`
     ("127.0.0.1:PORT", a stand-in upstream on loopback);
  4. `health ADDR` and `ready ADDR` get free loopback ports (the lab's 8080/8181 may be taken);
  5. `import GLOB` (the lab's /etc/coredns/bind.d/*.conf) reads from the CoreDNS work directory
     instead, where nothing matches (so no extra `bind`: rule 1's holds).
  A Corefile that has no `hosts` or no `forward` directive, or a server block whose key is
  not a zone, raises ValueError: the rewrite must not silently leave a production path in.
- `CoreDNS(corefile_text, workdir)` is a context manager that writes the (already rewritten)
  text to workdir/Corefile, with `PORT` placeholders filled, starts `coredns -conf` as a child
  process and returns once it answers a query; a port taken meanwhile is retried with another
  (tests.helpers.dnsserver, shared with dnsmasq). Its log is in `log()`.
  `query`/`dig`/`wait_for_answer` are tests.helpers.dig's against it.
- `hosts_options(text)` reads the `hosts` block's options (e.g. {"reload": "2s", "ttl": "30"})
  and `change_ceiling(text)` is how long a change may take to be answered under that Corefile
  (reload interval + cache TTL), plus a generous margin for a busy machine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from tests.helpers.dnsserver import DnsServerProcess
from tests.helpers.net import free_port
from tests.helpers.upstream import upstream_binary

__all__ = [
    "CoreDNS",
    "CoreDNSError",
    "change_ceiling",
    "hosts_options",
    "loopback_corefile",
]

# Margin on top of what the Corefile itself allows, for a machine shared by many jobs.
_MARGIN = 20.0
_DNS_PORT = "{dns_port}"
_PLACEHOLDER = re.compile(r"\{(dns_port|free_port|workdir)\}")


class CoreDNSError(RuntimeError):
    """CoreDNS would not start or stopped answering; the message has its log."""


def _directives(text: str) -> list[tuple[int, int, list[str]]]:
    """(line index, brace depth, tokens) of every non-comment line."""
    out = []
    depth = 0
    for index, line in enumerate(text.splitlines()):
        tokens = line.split("#", 1)[0].split()
        if tokens:
            out.append((index, depth, tokens))
        depth += line.split("#", 1)[0].count("{") - line.split("#", 1)[0].count("}")
    return out


def loopback_corefile(text: str, *, hosts_file: Path, upstream: str) -> str:
    """`text` with the rewrite rules of the module docstring applied (ports as placeholders)."""
    lines = text.splitlines()
    seen = {"hosts": 0, "forward": 0}
    inserts: list[int] = []
    for index, depth, tokens in _directives(text):
        if depth == 0 and tokens[-1] == "{":
            keys = []
            for key in tokens[:-1]:
                zone = key.rstrip(",")
                zone, _, port = zone.partition(":")
                if port not in ("", "53") or not re.fullmatch(r"\.|[a-z0-9.-]+\.?", zone):
                    raise ValueError(f"server block key {key!r} is not a zone on port 53")
                keys.append(f"{zone}:{_DNS_PORT}")
            lines[index] = " ".join([*keys, "{"])
            inserts.append(index + 1)
        elif tokens[0] == "hosts" and len(tokens) > 1:
            seen["hosts"] += 1
            lines[index] = lines[index].replace(tokens[1], str(hosts_file), 1)
        elif tokens[0] == "forward" and len(tokens) > 2:
            seen["forward"] += 1
            targets = [t for t in tokens[2:] if t != "{"]
            indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
            tail = " {" if tokens[-1] == "{" else ""
            lines[index] = f"{indent}forward {tokens[1]} {upstream}{tail}"
            if not targets:
                raise ValueError(f"forward without a target: {lines[index]!r}")
        elif tokens[0] in ("health", "ready") and len(tokens) > 1 and tokens[1] != "{":
            lines[index] = lines[index].replace(tokens[1], "127.0.0.1:{free_port}", 1)
        elif tokens[0] == "import" and len(tokens) == 2:
            glob = Path(tokens[1]).name
            lines[index] = lines[index].replace(tokens[1], f"{{workdir}}/import.d/{glob}", 1)
    missing = [name for name, count in seen.items() if count == 0]
    if missing:
        raise ValueError(f"the Corefile has no {' and no '.join(missing)} directive")
    for index in reversed(inserts):
        lines.insert(index, "    bind 127.0.0.1")
    return "\n".join(lines) + "\n"


def hosts_options(text: str) -> dict[str, str]:
    """The options inside the (first) `hosts` block, e.g. {"ttl": "30", "reload": "2s"}."""
    options: dict[str, str] = {}
    inside = False
    for _, _, tokens in _directives(text):
        if tokens[0] == "hosts":
            inside = tokens[-1] == "{"
            continue
        if inside:
            if tokens[0] == "}":
                break
            options[tokens[0]] = " ".join(tokens[1:])
    return options


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", duration)
    if match is None:
        raise ValueError(f"cannot read the duration {duration!r}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]
    return float(match[1]) * scale


def change_ceiling(text: str) -> float:
    """Seconds within which a change to the file must be answered under this Corefile.

    The plugin re-reads every `reload` (default 5s); a `cache` in front keeps a positive answer
    up to its TTL (capped by the hosts plugin's ttl); a margin covers a busy machine.
    """
    reload = _seconds(hosts_options(text).get("reload", "5s"))
    cache = 0.0
    for _, _, tokens in _directives(text):
        if tokens[0] == "cache":
            cache = float(tokens[1]) if len(tokens) > 1 and tokens[1].isdigit() else 3600.0
            ttl = hosts_options(text).get("ttl", "3600")
            cache = min(cache, float(ttl))
    return reload + cache + _MARGIN


class CoreDNS(DnsServerProcess):
    """One coredns child process serving a loopback Corefile."""

    NAME = "coredns"
    ERROR = CoreDNSError
    IN_USE = "address already in use"
    START_TIMEOUT = 20.0

    def __init__(self, corefile: str, workdir: Path) -> None:
        super().__init__()
        self.template = corefile
        self.workdir = workdir
        self.corefile = ""
        self._binary: Path | None = None

    def start(self) -> Self:
        self._binary = upstream_binary("coredns")
        self.workdir.mkdir(parents=True, exist_ok=True)
        return super().start()

    def _prepare(self) -> None:
        self.corefile = _PLACEHOLDER.sub(self._fill, self.template)
        (self.workdir / "Corefile").write_text(self.corefile)

    def _command(self) -> list[str]:
        return [str(self._binary), "-conf", str(self.workdir / "Corefile")]

    def _cwd(self) -> Path:
        return self.workdir

    def _start_failure(self, log: str) -> str:
        return f"coredns did not start with\n{self.corefile}\n{log}"

    def _fill(self, match: re.Match[str]) -> str:
        if match[1] == "workdir":
            return str(self.workdir)
        return str(self.port if match[1] == "dns_port" else free_port(self.address))
