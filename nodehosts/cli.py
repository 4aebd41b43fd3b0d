"""Command line: `nodehosts run | dump | check-config | demo`, and `--version`.

Contract: exit 0 on success, 2 on usage or configuration errors (the message names the bad
key or flag), 1 when a one-shot command could not do its work (the API was unreachable).
Flags override the TOML file; both are validated once into `Settings` (nodehosts.config).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nodehosts import __version__
from nodehosts.config import (
    DEFAULT_CONFIG_PATH,
    LOG_FORMATS,
    LOG_LEVELS,
    ConfigError,
    Settings,
    build_settings,
    read_config_file,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _source_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("source and records")
    group.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML config file (default: {DEFAULT_CONFIG_PATH} when it exists)",
    )
    group.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig (default: in-cluster, then ~/.kube/config)"
    )
    group.add_argument(
        "--label-selector", metavar="SELECTOR", help="only Nodes matching this label selector"
    )
    group.add_argument(
        "--domain",
        metavar="DOMAIN",
        help="domain for bare node names (default node.internal; '' for bare names only)",
    )
    group.add_argument(
        "--address-types",
        metavar="TYPES",
        help="comma-separated address type preference (default InternalIP,ExternalIP)",
    )
    group.add_argument(
        "--static-hosts", metavar="PATH", help="hosts-format file of extra, non-node hosts"
    )
    group.add_argument(
        "--exclude-not-ready",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave out nodes that are not Ready",
    )
    group.add_argument(
        "--exclude-unschedulable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave out cordoned nodes",
    )


def _log_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-format", choices=LOG_FORMATS, help="console on a terminal, JSON otherwise (auto)"
    )
    group.add_argument("--log-level", choices=LOG_LEVELS, help="default info")


def _sink_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("publishing")
    group.add_argument(
        "--hosts-file", metavar="PATH", help="write the hosts file here (its directory must exist)"
    )
    group.add_argument(
        "--dns-listen",
        metavar="ADDR:PORT",
        action="append",
        help="serve DNS on this address (repeatable)",
    )
    group.add_argument("--ttl", type=int, metavar="SECONDS", help="TTL of DNS answers (default 30)")
    group.add_argument(
        "--negative-ttl",
        type=int,
        metavar="SECONDS",
        help="TTL of negative DNS answers (default 5)",
    )
    group.add_argument(
        "--upstream",
        metavar="ADDR[:PORT]",
        action="append",
        help="forward other names here (repeatable)",
    )
    group.add_argument(
        "--allow-recursion-from",
        metavar="CIDR",
        action="append",
        help="clients allowed to use forwarding (repeatable; default loopback)",
    )
    ops = parser.add_argument_group("operations")
    ops.add_argument(
        "--metrics-listen", metavar="ADDR:PORT", help="serve /metrics, /healthz and /readyz"
    )
    ops.add_argument(
        "--control-socket",
        metavar="PATH",
        help="control socket for `dump --from daemon` ('' to disable)",
    )
    ops.add_argument(
        "--state-dir",
        metavar="PATH",
        help="where the last published records are kept ('' to disable)",
    )
    csr = parser.add_argument_group("kubelet serving certificates")
    csr.add_argument(
        "--approve-serving-csrs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="approve kubelet serving CSRs that pass every check",
    )
    csr.add_argument(
        "--csr-allowed-cidr",
        metavar="CIDR",
        action="append",
        help="IP SANs must also lie in one of these (repeatable)",
    )
    csr.add_argument(
        "--csr-max-expiration-seconds",
        type=int,
        metavar="SECONDS",
        help="refuse longer requested lifetimes",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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

    dump = commands.add_parser(
        "dump",
        help="print what would be published",
        description="Print what nodehosts publishes, and why, from a fresh LIST.",
    )
    _source_flags(dump)
    _log_flags(dump)
    dump.add_argument(
        "--format",
        choices=("hosts", "json"),
        default="hosts",
        help="hosts file text or a JSON report (default hosts)",
    )

    check = commands.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate the config file and flags, print the result.",
    )
    _source_flags(check)
    _sink_flags(check)
    _log_flags(check)

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
    _log_flags(demo)
    return parser


# argparse destination -> Settings field, for the flags that map one to one.
_OVERRIDES = {
    "kubeconfig": "kubeconfig",
    "label_selector": "label_selector",
    "domain": "domain",
    "address_types": "address_types",
    "static_hosts": "static_hosts",
    "exclude_not_ready": "exclude_not_ready",
    "exclude_unschedulable": "exclude_unschedulable",
    "hosts_file": "hosts_file",
    "dns_listen": "dns_listen",
    "ttl": "ttl",
    "negative_ttl": "negative_ttl",
    "upstream": "upstreams",
    "allow_recursion_from": "allow_recursion_from",
    "log_format": "log_format",
    "log_level": "log_level",
    "metrics_listen": "metrics_listen",
    "control_socket": "control_socket",
    "state_dir": "state_dir",
    "approve_serving_csrs": "approve_serving_csrs",
    "csr_allowed_cidr": "csr_allowed_cidrs",
    "csr_max_expiration_seconds": "csr_max_expiration_seconds",
}


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
    overrides = {
        field: getattr(args, dest) for dest, field in _OVERRIDES.items() if hasattr(args, dest)
    }
    return build_settings(file_data, overrides, config_path=config_path)


def check_runtime(settings: Settings, *, command: str) -> None:
    """Problems a daemon would only hit later, reported now as configuration errors."""
    if command == "run" and settings.hosts_file is None and not settings.dns_listen:
        raise ConfigError("hosts.file / dns.listen: nothing to publish; set at least one")
    if settings.hosts_file is not None and not settings.hosts_file.parent.is_dir():
        raise ConfigError(
            f"hosts.file: directory {settings.hosts_file.parent} does not exist "
            f"(got {str(settings.hosts_file)!r})"
        )
    if settings.static_hosts is not None and not settings.static_hosts.is_file():
        raise ConfigError(
            f"records.static_hosts: no such file (got {str(settings.static_hosts)!r})"
        )
    if settings.kubeconfig is not None and not settings.kubeconfig.is_file():
        raise ConfigError(f"kubernetes.kubeconfig: no such file (got {str(settings.kubeconfig)!r})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from nodehosts import logs

    try:
        if args.command == "demo":
            logs.configure(args.log_format or "auto", args.log_level or "info")
            from nodehosts.testing.simulation import run_demo

            return run_demo(duration=args.duration, dns_listen=args.dns_listen, seed=args.seed)
        settings = settings_from_args(args)
        check_runtime(settings, command=args.command)
    except ConfigError as error:
        print(f"nodehosts: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_format, settings.log_level)

    if args.command == "check-config":
        print(f"config ok: {settings.config_path or '(no file)'}")
        return EXIT_OK
    if args.command == "dump":
        return _dump(settings, output_format=args.format)
    return _run(settings)


def _run(settings: Settings) -> int:
    from nodehosts.adapters.eventloop import run as run_loop
    from nodehosts.app import Daemon, run_daemon

    async def main_task() -> int:
        return await run_daemon(Daemon(settings))

    return run_loop(main_task())


def _dump(settings: Settings, *, output_format: str) -> int:
    from nodehosts.adapters.kube import KubeConfigError, list_nodes, load_client_configuration
    from nodehosts.app import read_static_hosts
    from nodehosts.core.hosts import render_hosts
    from nodehosts.core.records import build_publication
    from nodehosts.core.report import publication_report

    try:
        configuration = load_client_configuration(settings.kubeconfig)
    except KubeConfigError as error:
        print(f"nodehosts: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        nodes, resource_version = list_nodes(configuration, label_selector=settings.label_selector)
    except Exception as error:  # any failure to LIST is the same to the user: no data
        print(f"nodehosts: error: cannot list nodes: {error}", file=sys.stderr)
        return EXIT_FAILED
    publication = build_publication(
        nodes.values(), read_static_hosts(settings.static_hosts), settings.record_policy
    )
    if output_format == "json":
        report = {"source": "list", "resource_version": resource_version}
        report.update(publication_report(publication))
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_hosts(publication.records))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
