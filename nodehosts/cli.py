"""Command line: `nodehosts run | dump | check-config | demo`, and `--version`.

Contract: exit 0 on success, 2 on usage or configuration errors (the message names the bad
key or flag), 1 when a one-shot command could not do its work (the API was unreachable, or
`dump --from daemon` found no daemon). `dump --diff` exits like diff(1): 0 when the daemon's
records match a fresh LIST, 1 when they differ, 2 when they cannot be compared.
Flags override the TOML file; both are validated once into `Settings` (nodehosts.config);
each setting's flag, its help and its default shown there are generated from its declaration
(config.SETTINGS), and its value lands in `args.<field name>`.
`run` hands the daemon a loader that re-reads the file under the same flags, for reloads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from nodehosts import __version__
from nodehosts.config import (
    DEFAULT_CONFIG_PATH,
    SETTINGS,
    VIEW_KEYS,
    ConfigError,
    Setting,
    Settings,
    build_settings,
    read_config_file,
)

if TYPE_CHECKING:
    from kubernetes.client import Configuration

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# `dump --diff` follows diff(1): 0 the same, 1 different, 2 could not compare.
EXIT_SAME, EXIT_DIFFERENT, EXIT_TROUBLE = 0, 1, 2
# Output closed by its reader (`nodehosts dump | head`): 128 + SIGPIPE, like a shell tool.
EXIT_BROKEN_PIPE = 141
DUMP_SOURCES = ("auto", "daemon", "list")
# A diff that finds differences asks the daemon again after this long: the first answer may
# have raced a change the daemon was still coalescing.
DIFF_RECHECK_SECONDS = 1.0


# The --help groups of the settings' flags, in this order, and the TOML sections in each.
_GROUPS = {
    "source and records": ("kubernetes", "records"),
    "publishing": ("hosts", "dns"),
    "operations": ("metrics", "control", "state"),
    "kubelet serving certificates": ("csr",),
    "logging": ("log",),
}


def _add_setting_flag(
    group: argparse._ActionsContainer,
    setting: Setting,
    *,
    help: str | None = None,
    shown_default: str | None = None,
) -> None:
    """The flag of one setting, from its declaration (nodehosts.config.SETTINGS); its value
    lands in `args.<field name>`, None when not given. `help` and `shown_default` replace the
    declared ones (a command that uses the setting otherwise)."""
    text = setting.help_text(help, shown_default=shown_default).replace("%", "%%")
    options: dict[str, Any] = {"dest": setting.name, "help": text}
    if setting.kind == "bool":
        options.update(action=argparse.BooleanOptionalAction, default=None)
    else:
        options.update(metavar=setting.metavar, choices=setting.choices)
        if setting.kind == "int":
            options["type"] = int
        elif setting.kind == "repeat":
            options["action"] = "append"
    group.add_argument(setting.flag, **options)


def _setting_flags(
    parser: argparse.ArgumentParser, title: str, group: argparse._ArgumentGroup | None = None
) -> None:
    group = group or parser.add_argument_group(title)
    for setting in SETTINGS.values():
        if setting.section in _GROUPS[title]:
            _add_setting_flag(group, setting)


def _source_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("source and records")
    group.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML config file (default: {DEFAULT_CONFIG_PATH} when it exists)",
    )
    _setting_flags(parser, "source and records", group)


def _log_flags(parser: argparse.ArgumentParser) -> None:
    _setting_flags(parser, "logging")


def _sink_flags(parser: argparse.ArgumentParser) -> None:
    for title in ("publishing", "operations", "kubelet serving certificates"):
        _setting_flags(parser, title)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line and a hint, not the whole usage (21 lines for `run`)."""

    def error(self, message: str) -> NoReturn:
        usage = self.format_usage()
        short_usage = usage if usage.count("\n") <= 2 else ""  # `nodehosts` alone: 1 line
        hint = f"Try '{self.prog} --help'."
        self.exit(EXIT_USAGE, f"{short_usage}{self.prog}: error: {message}\n{hint}\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nodehosts",
        description="Publish Kubernetes node names as an atomic hosts file and over DNS.",
    )
    parser.add_argument("--version", action="version", version=f"nodehosts {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run the daemon",
        description="Watch Nodes and publish their names until stopped.",
    )
    _source_flags(run)
    _sink_flags(run)
    _log_flags(run)
    run.add_argument(
        "--once",
        action="store_true",
        help=(
            "write hosts.file from one LIST of Nodes and exit (cron, first boot): 0 written or "
            "already current, 1 the API failed, 2 a configuration error"
        ),
    )

    dump = commands.add_parser(
        "dump",
        help="print what is published, and why",
        description=(
            "Print what nodehosts publishes, and why: the running daemon's live state (through "
            "its control socket) or a fresh LIST. --diff compares the two; it exits 0 when "
            "they agree, 1 when they differ and 2 when they cannot be compared."
        ),
    )
    _source_flags(dump)
    _log_flags(dump)
    _dump_view_flags(dump)
    dump.add_argument(
        "--from",
        dest="source",
        choices=DUMP_SOURCES,
        default="auto",
        help=(
            "daemon: the running daemon's state; list: a fresh LIST; auto (default): the "
            "daemon when its socket answers and no --kubeconfig, --label-selector or record "
            "flag asks for another view, else a fresh LIST"
        ),
    )
    _add_setting_flag(dump, SETTINGS["control_socket"], help="the daemon's control socket")
    dump.add_argument(
        "--diff",
        action="store_true",
        help="compare the daemon's records with a fresh LIST: - stale, + missing",
    )

    check = commands.add_parser(
        "check-config",
        help="validate a config file",
        description=(
            "Validate the config file and flags and print every problem at once, as FILE:LINE: "
            "message; also that the paths it names exist here and the kubeconfig names a "
            "cluster (not with --offline)."
        ),
    )
    _source_flags(check)
    _sink_flags(check)
    _log_flags(check)
    check.add_argument(
        "--offline",
        action="store_true",
        help="check a config for another machine: skip its paths and the kubeconfig",
    )

    demo = commands.add_parser(
        "demo",
        help="run against a simulated cluster",
        description="Run the real daemon against an embedded simulated cluster.",
    )
    demo.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C)",
    )
    demo.add_argument(
        "--dns-listen",
        metavar="ADDR:PORT",
        default="127.0.0.1:5353",
        help="also serve DNS here ('' to disable; default 127.0.0.1:5353)",
    )
    demo.add_argument("--seed", type=int, default=None, help="random seed for the simulation")
    logging = demo.add_argument_group("logging")
    _add_setting_flag(logging, SETTINGS["log_format"])
    # The demo's default level is warning: --log-level info shows the daemon's lines too.
    _add_setting_flag(logging, SETTINGS["log_level"], shown_default="warning")
    return parser


def _dump_view_flags(dump: argparse.ArgumentParser) -> None:
    """-o/--format and --watch: how `dump` shows the state (nodehosts.dumpview)."""
    from nodehosts.dumpview import OUTPUTS

    dump.add_argument(
        "-o",
        "--output",
        "--format",
        dest="output",
        choices=OUTPUTS,
        default=None,
        help=(
            "table (NAME, ADDRESSES, PUBLISHED, REASON), wide (also READY, SCHEDULABLE, NAMES), "
            "hosts (the hosts file text), json or yaml (the full report); default: table on a "
            "terminal, hosts otherwise"
        ),
    )
    dump.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help=(
            "from the running daemon: print the records, then each change as it happens "
            "(+ added, - removed lines), until interrupted"
        ),
    )


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings' flag values this command has (None: not given), by Settings field."""
    return {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """TOML file (explicit, or the default path when present) overridden by flags."""
    config_path: Path | None = None
    file_data: dict[str, Any] = {}
    explicit = getattr(args, "config", None)
    if explicit is not None:
        config_path = Path(explicit) if explicit else None  # --config '' means no file
    elif DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    if config_path is not None:
        file_data = read_config_file(config_path)
    return build_settings(file_data, setting_overrides(args), config_path=config_path)


def check_runtime(settings: Settings, *, command: str) -> None:
    """Problems a daemon would only hit later, reported now as configuration errors."""
    if command == "run" and settings.hosts_file is None and not settings.dns_listen:
        raise ConfigError.at("hosts.file / dns.listen", "nothing to publish; set at least one")
    from nodehosts.checkconfig import path_problems

    problems = path_problems(settings)
    if problems:
        raise problems[0]


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point: `_main`, with a reader that went away (`| head`) ending it quietly
    (exit 141, like a shell pipeline's SIGPIPE) and streams that broke never raising at exit."""
    code = EXIT_BROKEN_PIPE
    try:
        try:
            code = _main(argv)
        finally:  # also after --help's SystemExit: the buffered text meets the closed pipe here
            with contextlib.suppress(ValueError):  # stdout closed: _detach_broken_streams
                sys.stdout.flush()
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    finally:
        _detach_broken_streams()
    return code


def _detach_broken_streams() -> None:
    """Flush stdout and stderr now; one whose reader went away is pointed at /dev/null, so the
    interpreter's own flush at exit cannot fail too (a traceback and exit 120 after a clean
    stop)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from nodehosts import logs

    try:
        if args.command == "demo":
            # The demo shows its changes itself; the daemon's info lines would bury them.
            logs.configure(args.log_format or "auto", args.log_level or "warning")
            from nodehosts.testing.simulation import run_demo

            return run_demo(duration=args.duration, dns_listen=args.dns_listen, seed=args.seed)
        if args.command == "check-config":
            return _check_config(args)
        settings = settings_from_args(args)
        check_runtime(settings, command=args.command)
    except ConfigError as error:
        print(f"nodehosts: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_format, settings.log_level)

    if args.command == "check-config":
        print(f"config ok: {settings.config_path or '(no file)'}")
        return EXIT_OK
    if args.command == "run" and args.once:
        return _run_once(settings)
    if args.command == "dump":
        if args.diff:
            return _dump_diff(settings)
        if args.watch:
            return _dump_watch(settings)
        return _dump(settings, output=_dump_output(args), source=_dump_source(args))
    return _run(settings, args)


def _check_config(args: argparse.Namespace) -> int:
    """Every problem at once (nodehosts.checkconfig), exit 2 if any."""
    from nodehosts.checkconfig import Problem, check

    explicit = args.config
    path: Path | None
    if explicit is not None:
        path = Path(explicit) if explicit else None
    else:
        path = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None
    problems = check(path, setting_overrides(args), offline=args.offline)
    if not problems and not args.offline:
        # Checks the daemon makes at start that check-config does not know itself.
        try:
            check_runtime(settings_from_args(args), command="check-config")
        except ConfigError as error:
            problems.append(Problem(str(path or "flags"), str(error)))
    shown = str(path) if path is not None else "(no file)"
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"nodehosts: {len(problems)} problem(s) in {shown}", file=sys.stderr)
        return EXIT_USAGE
    note = " (offline: paths and the kubeconfig not checked)" if args.offline else ""
    print(f"config ok: {shown}{note}")
    return EXIT_OK


def _run_once(settings: Settings) -> int:
    """`run --once`: one LIST, the hosts file written as the daemon would, then exit."""
    import structlog

    from nodehosts.adapters.hostsfile import HostsFileError, HostsFileWriter
    from nodehosts.adapters.kube.config import KubeConfigError, load_client_configuration
    from nodehosts.adapters.kube.nodes import list_nodes
    from nodehosts.app.publisher import hosts_body, read_static_hosts
    from nodehosts.core.hosts import read_generation, render_file, render_hosts
    from nodehosts.core.records import build_publication

    if settings.hosts_file is None:
        _error("run --once writes the hosts file: set hosts.file or --hosts-file")
        return EXIT_USAGE
    try:
        configuration = load_client_configuration(settings.kubeconfig)
    except KubeConfigError as error:
        _error(error)
        return EXIT_USAGE
    try:
        nodes, resource_version = list_nodes(configuration, label_selector=settings.label_selector)
        hidden = _list_hidden(configuration, settings)
    except Exception as error:  # any failure to LIST is the same here: nothing is written
        _error(f"cannot list nodes: {error}")
        return EXIT_FAILED
    try:
        static_hosts = read_static_hosts(settings.static_hosts)
    except (OSError, UnicodeDecodeError) as error:
        _error(f"records.static_hosts: {error}")
        return EXIT_FAILED
    records = build_publication(
        nodes.values(), static_hosts, settings.record_policy, hidden
    ).records
    writer = HostsFileWriter(settings.hosts_file)
    log = structlog.get_logger(__name__)
    body = render_hosts(records)
    try:
        current = writer.current()
        generation = read_generation(current or "") or 0
        if current is not None and hosts_body(current) == body:
            log.info("hosts_file_current", path=str(settings.hosts_file), generation=generation)
            return EXIT_OK
        generation += 1
        writer.write(render_file(records, generation=generation, body=body))
    except HostsFileError as error:
        _error(error)
        return EXIT_FAILED
    log.info(
        "hosts_file_written",
        path=str(settings.hosts_file),
        generation=generation,
        hosts=len(records),
        addresses=records.address_count(),
        resource_version=resource_version,
    )
    return EXIT_OK


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from nodehosts.app.daemon import Daemon, StartupError, run_daemon
    from nodehosts.runtime import fix_mmap_threshold, prefer_the_loop
    from nodehosts.runtime import run as run_loop

    fix_mmap_threshold()
    prefer_the_loop()

    def reload_settings() -> Settings:
        """The config file as it is now, under the same command line (SIGHUP, file watch)."""
        new = settings_from_args(args)
        check_runtime(new, command="run")
        return new

    async def main_task() -> int:
        return await run_daemon(Daemon(settings, reload_settings=reload_settings))

    try:
        return run_loop(main_task())
    except StartupError as error:  # logged by the daemon: one line, no traceback
        return error.exit_code


def _dump_source(args: argparse.Namespace) -> str:
    """daemon, list, or auto; auto with flags that change the view means list."""
    if args.source == "auto" and any(getattr(args, name, None) is not None for name in VIEW_KEYS):
        return "list"
    return str(args.source)


def _error(message: object) -> None:
    print(f"nodehosts: error: {message}", file=sys.stderr)


def _dump(settings: Settings, *, output: str, source: str) -> int:
    import structlog

    from nodehosts.adapters.control import ControlError, DaemonUnavailable, NoAccess
    from nodehosts.dumpview import REPORT_OUTPUTS

    output_format = "json" if output in REPORT_OUTPUTS else "hosts"

    if source in ("daemon", "auto"):
        path = settings.control_socket
        if path is None:
            if source == "daemon":
                _error("dump --from daemon: no control socket (control.socket is '')")
                return EXIT_USAGE
        else:
            try:
                state = _ask_daemon(path, output_format=output_format)
            except NoAccess as error:  # a LIST would need the same group's kubeconfig
                _error(error)
                return EXIT_USAGE
            except DaemonUnavailable as error:
                if source == "daemon":
                    _error(error)
                    return EXIT_FAILED
                structlog.get_logger(__name__).info(
                    "dump_from_list", reason=str(error), control_socket=str(path)
                )
            except ControlError as error:
                _error(f"daemon at {path}: {error}")
                return EXIT_FAILED
            else:
                _print_state(state, output=output)
                return EXIT_OK
    try:
        state = _list_state(settings, output_format=output_format)
    except _ListFailed as failure:
        _error(failure.message)
        return failure.code
    _print_state(state, output=output)
    return EXIT_OK


def _ask_daemon(path: Path, *, output_format: str) -> dict[str, Any]:
    from nodehosts.adapters.control import request

    state = request(path, "dump", format=output_format)
    if not isinstance(state, dict):
        from nodehosts.adapters.control import ControlError

        raise ControlError("the daemon's dump is not an object")
    return state


def _print_state(state: dict[str, Any], *, output: str) -> None:
    from nodehosts.dumpview import render

    sys.stdout.write(render(state, output))


def _dump_output(args: argparse.Namespace) -> str:
    """-o as given; else a table for a person at a terminal, the hosts text for a pipe."""
    if args.output is not None:
        return str(args.output)
    return "table" if sys.stdout.isatty() else "hosts"


# `dump --watch` asks the daemon to answer when its records change, or after this long.
WATCH_POLL_SECONDS = 30.0


def _dump_watch(settings: Settings) -> int:
    """Print the daemon's records, then `+`/`-` lines for each change, until interrupted."""
    import time

    from nodehosts.adapters.control import ControlError, request
    from nodehosts.dumpview import DIM, change_lines, host_lines, paint, use_colour

    path = settings.control_socket
    if path is None:
        _error("dump --watch needs the daemon's control socket (control.socket is '')")
        return EXIT_USAGE
    colour = use_colour(sys.stdout)
    try:
        state = _ask_daemon(path, output_format="hosts")
        lines = host_lines(str(state.get("text", "")))
        sys.stdout.write("".join(f"  {line}\n" for line in lines))
        sys.stdout.flush()
        while True:
            state = request(
                path,
                "watch",
                after=state.get("generation"),
                wait=WATCH_POLL_SECONDS,
                timeout=WATCH_POLL_SECONDS + 10,
            )
            new = host_lines(str(state.get("text", "")))
            changes = change_lines(lines, new, colour=colour)
            if changes:
                stamp = time.strftime("%H:%M:%S")
                sys.stdout.write(
                    paint(f"# {stamp} generation {state.get('generation')}", DIM, enabled=colour)
                    + "\n"
                )
                sys.stdout.write("".join(f"{line}\n" for line in changes))
                sys.stdout.flush()
            lines = new
    except KeyboardInterrupt:
        return EXIT_OK
    except ControlError as error:
        _error(f"dump --watch: {error}")
        return EXIT_FAILED


class _ListFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def _list_hidden(configuration: Configuration, settings: Settings) -> Mapping[str, str | None]:
    """With a label selector, the Nodes outside it hold their names, as in the daemon (its
    cluster view): a second LIST, without the selector. Raises what list_nodes raises."""
    from nodehosts.adapters.kube.nodes import list_nodes
    from nodehosts.core.records import NO_HIDDEN, hidden_nodes

    if settings.label_selector is None:
        return NO_HIDDEN
    everything, _ = list_nodes(configuration)
    return hidden_nodes(everything.values())


def _list_state(settings: Settings, *, output_format: str) -> dict[str, Any]:
    """A fresh LIST made into the same shape as the daemon's dump; raises _ListFailed."""
    from nodehosts.adapters.kube.config import KubeConfigError, load_client_configuration
    from nodehosts.adapters.kube.nodes import list_nodes
    from nodehosts.app.publisher import read_static_hosts
    from nodehosts.core.hosts import render_hosts
    from nodehosts.core.records import build_publication
    from nodehosts.core.report import publication_report

    try:
        configuration = load_client_configuration(settings.kubeconfig)
    except KubeConfigError as error:
        raise _ListFailed(str(error), EXIT_USAGE) from None
    try:
        nodes, resource_version = list_nodes(configuration, label_selector=settings.label_selector)
        hidden = _list_hidden(configuration, settings)
    except Exception as error:  # any failure to LIST is the same to the user: no data
        raise _ListFailed(f"cannot list nodes: {error}", EXIT_FAILED) from None
    try:
        static_hosts = read_static_hosts(settings.static_hosts)
    except (OSError, ValueError) as error:  # ValueError: too large, not UTF-8
        raise _ListFailed(f"records.static_hosts: {error}", EXIT_FAILED) from None
    publication = build_publication(nodes.values(), static_hosts, settings.record_policy, hidden)
    state: dict[str, Any] = {"source": "list", "resource_version": resource_version}
    if output_format == "json":
        state.update(publication_report(publication))
    else:
        state["text"] = render_hosts(publication.records)
    return state


def _policy_differences(settings: Settings, policy: Any) -> list[str]:
    """Where this command's record settings differ from the daemon's (they make a diff lie)."""
    if not isinstance(policy, dict):
        return []
    ours = settings.view_summary()
    return [
        f"{key} (daemon {_shown(policy[key])}, here {_shown(value)})"
        for key, value in ours.items()
        if key in policy and policy[key] != value
    ]


def _shown(value: object) -> str:
    """A setting's value as a person reads it: unset, not Python's None."""
    if value is None:
        return "unset"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value) or "none"
    return repr(value) if isinstance(value, str) else str(value)


def _dump_diff(settings: Settings) -> int:
    """The daemon's published records against a fresh LIST, as a unified diff of host lines."""
    import difflib
    import time

    from nodehosts.adapters.control import ControlError

    path = settings.control_socket
    if path is None:
        _error("dump --diff needs the daemon's control socket (control.socket is '')")
        return EXIT_TROUBLE
    try:
        daemon = _ask_daemon(path, output_format="hosts")
        fresh = _list_state(settings, output_format="hosts")
        if daemon.get("text") != fresh["text"]:
            time.sleep(DIFF_RECHECK_SECONDS)
            daemon = _ask_daemon(path, output_format="hosts")
    except ControlError as error:
        _error(f"cannot diff: {error}")
        return EXIT_TROUBLE
    except _ListFailed as failure:
        _error(f"cannot diff: {failure.message}")
        return EXIT_TROUBLE
    for difference in _policy_differences(settings, daemon.get("policy")):
        print(
            f"nodehosts: warning: settings differ from the daemon's: {difference}", file=sys.stderr
        )
    served, current = str(daemon.get("text", "")), str(fresh["text"])
    if served == current:
        print(
            f"nodehosts: the daemon's records match a fresh LIST "
            f"({len(current.splitlines())} lines)",
            file=sys.stderr,
        )
        return EXIT_SAME
    label = f"daemon generation {daemon.get('generation')} rv {daemon.get('resource_version')}"
    if daemon.get("stale"):
        label += " (stale: saved records)"
    lines = list(
        difflib.unified_diff(
            served.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile=label,
            tofile=f"list rv {fresh.get('resource_version')}",
            n=0,
        )
    )
    sys.stdout.writelines(lines)
    stale = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    missing = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    print(
        f"nodehosts: the daemon's records differ from a fresh LIST: {stale} stale line(s) (-), "
        f"{missing} missing line(s) (+)",
        file=sys.stderr,
    )
    return EXIT_DIFFERENT


if __name__ == "__main__":
    sys.exit(main())
