#!/usr/bin/env python3
"""Generate nodehosts(1) from the CLI's own argument parser and config schema.

    python3 docs/mkman.py [--version V] [-o FILE]

The Debian build runs this against the code it packages (debian/rules), so the shipped
man page always lists exactly the commands, options and config keys of that code. The
prose around them (description, files, signals, the systemd unit) is written here.
tests/e2e/test_packaging_sync.py checks that every option and key appears, and
tests/test_docs.py that docs/nodehosts.1 is this script's output (`make docs` rewrites it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any

# Run from a source checkout without installing: the repository root last on the path,
# so that PYTHONPATH (the build tree, in debian/rules) wins.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from nodehosts import __version__, cli, config


def esc(text: str) -> str:
    """Escape running text for roff: backslashes, hyphens, and control characters."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def subcommand_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(choice) for choice in action.choices) + "}"
    return action.dest.upper()


def option_lines(parser: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    """One .TP entry: the option spellings (with their argument), then the help text."""
    arg = metavar(action)
    spellings = []
    for option in action.option_strings:
        spelled = bold(option)
        if arg:
            spelled += " " + italic(arg)
        spellings.append(spelled)
    help_text = parser._get_formatter()._expand_help(action) if action.help else ""
    if action.choices is not None and action.nargs != 0 and action.metavar is not None:
        help_text += f" (one of: {', '.join(str(choice) for choice in action.choices)})"
    return [".TP", ", ".join(spellings), esc(help_text) if help_text else ""]


def synopsis(name: str, parser: argparse.ArgumentParser) -> list[str]:
    return [".SY nodehosts", bold(name), "[\\fIOPTIONS\\fR]", ".YS"]


def command_section(name: str, summary: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [f'.SS "{esc("nodehosts " + name)}"']
    out.append(esc(parser.description or summary))
    for group in parser._action_groups:
        actions = [
            action
            for action in group._group_actions
            if action.option_strings and action.help is not argparse.SUPPRESS
        ]
        if not actions:
            continue
        title = group.title or "options"
        if title in ("options", "optional arguments"):
            title = "options"
        out += [".PP", italic(title[0].upper() + title[1:]) + ":", ".RS 4"]
        for action in actions:
            out += option_lines(parser, action)
        out.append(".RE")
    return out


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{_default_text(item).strip(chr(34))}"' for item in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def config_section() -> list[str]:
    """Every setting's TOML key, flag and default, from its declaration (config.SETTINGS)."""
    out = [
        ".SH CONFIGURATION",
        esc(
            f"The configuration file ({config.DEFAULT_CONFIG_PATH} by default, or the file "
            "named by --config) is TOML. Every key can also be given as a command-line "
            "flag, which wins over the file. An unknown key is an error. The package "
            "installs a commented file with the defaults of the lab layout."
        ),
        ".PP",
        esc("Keys (section.key, the matching flag, and the built-in default):"),
        ".RS 4",
    ]
    section = None
    for setting in config.SETTINGS.values():
        if setting.section != section:
            out += [".PP", bold(f"[{setting.section}]")]
            section = setting.section
        default = _default_text(setting.default)
        out += [
            ".TP",
            bold(setting.file_key),
            esc(f"flag {setting.flag}; default {default}"),
        ]
    out.append(".RE")
    return out


STATIC_HEAD = """\
.SH DESCRIPTION
\\fBnodehosts\\fR watches the Node objects of a Kubernetes cluster and publishes one
record per node (its name, and the name under the configured domain, to the
node's InternalIP or ExternalIP address) in two ways:
.IP \\(bu 2
as a hosts file, rendered in full and replaced atomically (a dot\\-temp file in
the same directory, fsync, rename) whenever the records change, for CoreDNS's
\\fBhosts\\fR plugin or dnsmasq's \\fB\\-\\-hostsdir\\fR;
.IP \\(bu 2
as a DNS server of its own (\\fB\\-\\-dns\\-listen\\fR), forwarding other names to
upstream resolvers for the clients allowed to recurse.
.PP
Nothing is written before the first complete list of Nodes, and the last good
records are kept while the API server is unreachable.
.SH COMMANDS
"""

STATIC_TAIL = """\
.SH FILES
.TP
.I /etc/nodehosts/config.toml
The configuration file (a conffile of the Debian package).
.TP
.I /etc/nodehosts/kubeconfig
Credentials for the API server, readable by the \\fBnodehosts\\fR user
(\\fBchown root:nodehosts\\fR, \\fBchmod 0640\\fR). The systemd unit does not
start until this file exists.
.TP
.I /var/lib/nodehosts/hosts/nodes.hosts
The published hosts file. Point CoreDNS at it, and when CoreDNS runs in a
container, mount the \\fIdirectory\\fR /var/lib/nodehosts/hosts: a bind mount of
the single file keeps the old inode and never sees the atomic rename.
.TP
.I /var/lib/nodehosts/
State: the last published records, used at start before the API answers.
.TP
.I /run/nodehosts/control.sock
Control socket, used by \\fBnodehosts dump\\fR to ask the running daemon.
.TP
.I /usr/share/nodehosts/rbac.yaml
ClusterRole and ClusterRoleBinding granting the user or service account
\\fBnodehosts\\fR get, list and watch on nodes. Apply it with
\\fBkubectl apply \\-f /usr/share/nodehosts/rbac.yaml\\fR.
.TP
.I /usr/share/nodehosts/rbac\\-csr.yaml
What \\fBcsr.approve\\fR needs on top: get, list and watch on
certificatesigningrequests, update on their approval subresource and approve on the
kubernetes.io/kubelet\\-serving signer (never create). Apply it with
\\fBkubectl apply \\-f /usr/share/nodehosts/rbac\\-csr.yaml\\fR.
.TP
.I /usr/share/doc/nodehosts/examples/
A Corefile for CoreDNS's hosts plugin and a dnsmasq configuration serving the hosts
file; README.Debian beside it walks through the first start.
.TP
.I /usr/share/bash\\-completion/completions/nodehosts
Shell completion for bash (and for zsh: /usr/share/zsh/vendor\\-completions/_nodehosts).
.SH SYSTEMD
The unit \\fBnodehosts.service\\fR runs \\fBnodehosts run \\-\\-config
/etc/nodehosts/config.toml\\fR as the system user \\fBnodehosts\\fR with only
CAP_NET_BIND_SERVICE (to bind port 53), a read\\-only view of the system
except /var/lib/nodehosts, and sd_notify readiness and watchdog
(Type=notify, WatchdogSec=30). It is enabled on installation but is skipped
(\\(lqstart condition unmet\\(rq) until /etc/nodehosts/kubeconfig exists; then run
\\fBsystemctl start nodehosts\\fR. If the configuration names another kubeconfig,
override ConditionPathExists= with \\fBsystemctl edit nodehosts\\fR. It is restarted after a
failure, except after a configuration error (exit status 2). Logs go to the
journal as one JSON object per line: \\fBjournalctl \\-u nodehosts \\-o cat\\fR.
.SH SIGNALS
.TP
.B SIGTERM\\fR, \\fBSIGINT
Stop cleanly; the published hosts file is left in place.
.TP
.B SIGHUP
Sent by \\fBsystemctl reload nodehosts\\fR: re\\-read the configuration file, the
static hosts file and the kubeconfig (with the credential files it names) now. They are
also watched and re\\-read when they change. A configuration that does not validate is
rejected and the running one kept; keys that only apply at start are logged as
\\fBconfig_needs_restart\\fR.
.SH EXIT STATUS
.TP
.B 0
Success, or a clean stop of the daemon.
.TP
.B 1
A one\\-shot command could not do its work (for example, the API server was
unreachable).
.TP
.B 2
Usage or configuration error; the message names the bad key or flag.
.SH EXAMPLES
Check the configuration the service will use:
.PP
.RS 4
.EX
nodehosts check\\-config \\-\\-config /etc/nodehosts/config.toml
.EE
.RE
.PP
Print the records a fresh list of Nodes gives, as a hosts file or as JSON:
.PP
.RS 4
.EX
nodehosts dump \\-\\-config /etc/nodehosts/config.toml
nodehosts dump \\-\\-config /etc/nodehosts/config.toml \\-\\-format json
.EE
.RE
.PP
CoreDNS serving the hosts file with a short TTL, bare names and FQDNs (zone
\\fB.\\fR: the file holds both), forwarding the rest:
.PP
.RS 4
.\\" corefile: recommended (tests/integration/test_documented_corefiles.py runs it)
.EX
\\&. {
    errors
    hosts /var/lib/nodehosts/hosts/nodes.hosts . {
        ttl 30
        reload 2s
        fallthrough
    }
    loop
    forward . /etc/resolv.conf
}
.EE
.RE
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR hosts (5),
.BR kubectl (1)
"""


def _first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def render(version: str, date: str) -> str:
    parser = cli.make_parser()
    commands = subcommands(parser)
    summaries = subcommand_help(parser)
    out = [
        '.\\" Generated by docs/mkman.py from nodehosts.cli; do not edit.',
        f'.TH NODEHOSTS 1 "{date}" "nodehosts {esc(version)}" "User Commands"',
        ".SH NAME",
        "nodehosts \\- " + esc(_first_lower((parser.description or "").rstrip("."))),
        ".SH SYNOPSIS",
    ]
    for name, sub in commands.items():
        out += synopsis(name, sub)
    out += [".SY nodehosts", bold("--version"), ".YS", ".SY nodehosts", bold("--help"), ".YS"]
    out.append(STATIC_HEAD.rstrip("\n"))
    for name, sub in commands.items():
        out += command_section(name, summaries.get(name, ""), sub)
    out += config_section()
    out.append(STATIC_TAIL.rstrip("\n"))
    return "\n".join(line for line in out if line != "") + "\n"


CHANGELOG = Path(__file__).resolve().parent.parent / "debian" / "changelog"


def changelog_date(path: Path) -> _dt.datetime:
    """The date of the newest entry's trailer line (" -- Name <mail>  Thu, 26 Nov 2026 ...")."""
    from email.utils import parsedate_to_datetime

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(" -- ") and "  " in line[4:]:
            return parsedate_to_datetime(line[4:].split("  ", 1)[1].strip())
    raise SystemExit(f"mkman: no dated entry in {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", default=__version__, help="version shown in the header")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args()
    # Reproducible builds: the date of the newest debian/changelog entry (dpkg passes it as
    # SOURCE_DATE_EPOCH), so docs/nodehosts.1 in the repository is the packaged page.
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    when = _dt.datetime.fromtimestamp(epoch, tz=_dt.UTC) if epoch else changelog_date(CHANGELOG)
    text = render(args.version, when.strftime("%Y-%m-%d"))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
