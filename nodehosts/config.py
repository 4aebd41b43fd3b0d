"""One immutable `Settings` object, built from the TOML file and the command line.

Contract: each setting is declared once, on its `Settings` field
(`field(default=..., metadata=_setting(...))`: TOML section and key, parser, flag, help,
whether a reload applies it, whether it changes what `dump` shows or compares). `SETTINGS`
collects those declarations; the TOML keys, the command-line flags (nodehosts.cli),
validation, help text with the default, the man page's key list (docs/mkman.py), `LIVE_KEYS`
and `view_summary` are all generated from it. A new setting is one field here, plus its line
in deploy/config.toml (the packaged, commented file; tests/e2e/test_packaging_sync.py) and
its example in tests/test_settings_table.py; `make docs` then regenerates the man page and
the completions. `build_settings(file_data, overrides)` validates everything once and
either returns a frozen `Settings` or raises `ConfigError`, whose message names the bad key
(as `section.key` for the file, `--flag` for the command line) and the bad value, and whose
`.key` is the setting (its field name; None for the file as a whole or an unknown key).
Nothing else in nodehosts reads the config file or re-validates.
"""

from __future__ import annotations

import ipaddress
import reprlib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from nodehosts.core.csr import DEFAULT_DENIED_CIDRS, CsrPolicy
from nodehosts.core.names import domain_problem, label_problem
from nodehosts.core.records import RecordPolicy

DEFAULT_CONFIG_PATH = Path("/etc/nodehosts/config.toml")
LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The address types a kubelet reports (k8s.io/api/core/v1 NodeAddressType).
ADDRESS_TYPES = ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Endpoint = tuple[str, int]
T = TypeVar("T")
# A setting's parser: (where, raw value from TOML or a flag) -> the typed value, or ConfigError.
Parser = Callable[[str, Any], T]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the value.

    `where` is the `section.key` or `--flag` the message starts with (None: the file as a
    whole), `reason` the rest, `key` the setting (a Settings field name) or None.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.where: str | None = None
        self.reason = message

    @classmethod
    def at(cls, where: str, reason: str, *, key: str | None = None) -> ConfigError:
        """`where: reason`, with both kept apart for callers that show them apart."""
        error = cls(f"{where}: {reason}", key=key)
        error.where, error.reason = where, reason
        return error


# --- parsers: each takes (where, value) and returns the typed value or raises ConfigError.


# Values as errors show them: bounded, so a huge or deeply nested value makes a short message
# instead of a RecursionError.
_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict = 4, 20, 20
_SHOW.maxstring = _SHOW.maxother = 200


def _bad(where: str, value: Any, why: str) -> ConfigError:
    return ConfigError.at(where, f"{why} (got {_SHOW.repr(value)})")


def _path_or_none(where: str, value: Any) -> Path | None:
    if not isinstance(value, str):
        raise _bad(where, value, "expected a path string")
    return Path(value) if value else None


def _string_or_none(where: str, value: Any) -> str | None:
    if not isinstance(value, str):
        raise _bad(where, value, "expected a string")
    return value or None


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(where, value, "expected true or false")
    return value


def _domain(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(where, value, "expected a domain name")
    domain = value.strip().strip(".").lower()
    if domain and domain_problem(domain) is not None:
        raise _bad(where, value, "not a valid DNS domain")
    return domain


def _optional_name(where: str, value: Any) -> str | None:
    if value == "":
        return None
    name = _domain(where, value)
    if "." not in name:
        raise _bad(where, value, "expected a fully qualified name")
    return name


def _optional_mailbox(where: str, value: Any) -> str | None:
    """`hostmaster@example.org` or its DNS form `hostmaster.example.org`."""
    if value == "":
        return None
    if not isinstance(value, str):
        raise _bad(where, value, "expected a mailbox like hostmaster@example.org")
    local, at, domain = value.partition("@")
    if not at:
        return _optional_name(where, value)
    if not local or label_problem(local.lower()) is not None:
        raise _bad(where, value, "the mailbox's local part must be one DNS label")
    return f"{local.lower()}@{_optional_name(where, domain)}"


def _string_list(where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise _bad(where, value, "expected a list of strings")
    return list(value)


def _address_types(where: str, value: Any) -> tuple[str, ...]:
    types = _string_list(where, value)
    if not types:
        raise _bad(where, value, "needs at least one address type")
    for kind in types:
        if kind not in ADDRESS_TYPES:
            raise _bad(where, kind, f"unknown address type; one of {', '.join(ADDRESS_TYPES)}")
    if len(set(types)) != len(types):
        raise _bad(where, value, "lists an address type twice")
    return tuple(types)


def _suffixes(where: str, value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for item in _string_list(where, value):
        suffix = _domain(where, item)
        if not suffix:
            raise _bad(where, item, "a suffix cannot be empty")
        if suffix not in out:
            out.append(suffix)
    return tuple(out)


def _csr_address_types(where: str, value: Any) -> tuple[str, ...]:
    types = _address_types(where, value)
    for kind in types:
        if kind not in ("InternalIP", "ExternalIP"):
            raise _bad(where, kind, "an IP SAN can only be an InternalIP or ExternalIP")
    return types


def _int_range(low: int, high: int) -> Parser[int]:
    def check(where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _bad(where, value, f"expected a whole number from {low} to {high}")
        return value

    return check


def _optional_positive_int(where: str, value: Any) -> int | None:
    if value in (0, None):
        return None
    return _int_range(600, 10 * 365 * 86400)(where, value)


def parse_endpoint(where: str, value: Any, *, default_port: int | None) -> Endpoint:
    """`ADDR:PORT`, `[V6]:PORT`, or a bare address when a default port applies."""
    if not isinstance(value, str) or not value:
        raise _bad(where, value, "expected ADDR:PORT")
    host, port_text = value, None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise _bad(where, value, "expected [IPv6]:PORT")
        port_text = rest[1:] or None
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _bad(where, value, "the address must be an IP address") from None
    if port_text is None:
        if default_port is None:
            raise _bad(where, value, "a port is required")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise _bad(where, value, "the port must be 0-65535")
    return host, int(port_text)


def _endpoints(default_port: int | None) -> Parser[tuple[Endpoint, ...]]:
    def check(where: str, value: Any) -> tuple[Endpoint, ...]:
        items = _string_list(where, value)
        endpoints = tuple(parse_endpoint(where, item, default_port=default_port) for item in items)
        if len(set(endpoints)) != len(endpoints):
            raise _bad(where, value, "lists an address twice")
        return endpoints

    return check


def _optional_endpoint(where: str, value: Any) -> Endpoint | None:
    if value == "":
        return None
    return parse_endpoint(where, value, default_port=None)


def _networks(where: str, value: Any) -> tuple[Network, ...]:
    out: list[Network] = []
    for item in _string_list(where, value):
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError as error:
            raise _bad(where, item, f"not a network in CIDR form: {error}") from None
    return tuple(out)


def _choice(choices: tuple[str, ...]) -> Parser[str]:
    def check(where: str, value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise _bad(where, value, f"expected one of {', '.join(choices)}")
        return value.lower()

    return check


def _label_selector(where: str, value: Any) -> str | None:
    selector = _string_or_none(where, value)
    if selector is not None and any(ch in selector for ch in "\n\r\t"):
        raise _bad(where, value, "a label selector is one line")
    return selector


# --- the declaration of one setting


# How its flag takes a value: text (one string), int, bool (--x / --no-x), repeat (the flag
# may be given again; TOML: a list), csv (one comma-separated string; TOML: a list).
FlagKind = Literal["text", "int", "bool", "repeat", "csv"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: everything the TOML file, the command line, validation, help, reloads and
    `dump` need to know about it. Built from its `Settings` field's `_setting(...)`."""

    name: str  # the Settings field
    section: str  # [section] in the TOML file
    toml_key: str  # its key in that table
    parse: Parser[Any]
    help: str  # for --help and the man page, without the default (generated)
    default: Any
    flag: str
    kind: FlagKind
    metavar: str | None
    choices: tuple[str, ...] | None
    # How help shows the default when the value would mislead, or is unset but means
    # something (ns.<domain>); None: generated from the value.
    shown_default: str | None
    live: bool  # a reload applies it to the running daemon (else: config_needs_restart)
    view: bool  # given as a flag, `dump` shows another view than the daemon's (a fresh LIST)
    policy: bool  # decides what is published: in view_summary, compared by `dump --diff`

    @property
    def file_key(self) -> str:
        """`section.key`, as messages and logs name it."""
        return f"{self.section}.{self.toml_key}"

    def check(self, where: str, value: Any) -> Any:
        """The parsed value; a ConfigError names `where` and carries this setting's key."""
        try:
            return self.parse(where, value)
        except ConfigError as error:
            error.key = self.name
            raise

    def default_text(self) -> str | None:
        """The default as help shows it; None when there is nothing to show (off, unset)."""
        if self.shown_default is not None:
            return self.shown_default
        return _shown(self.default, kind=self.kind, metavar=self.metavar)

    def help_text(self, text: str | None = None, *, shown_default: str | None = None) -> str:
        """The help line: what it does (`text` instead of its own help), then (repeatable;
        default: X) as they apply (`shown_default` instead of its own)."""
        notes = ["repeatable"] if self.kind == "repeat" else []
        default = shown_default or self.default_text()
        if default is not None:
            notes.append(f"default: {default}")
        text = text or self.help
        return f"{text} ({'; '.join(notes)})" if notes else text


def _shown(value: Any, *, kind: FlagKind, metavar: str | None) -> str | None:
    if value is None or value is False or value == ():
        return None
    if isinstance(value, tuple):
        return ("," if kind == "csv" else ", ").join(str(item) for item in value)
    if metavar == "BYTES" and isinstance(value, int) and value % (1 << 20) == 0:
        return f"{value >> 20} MiB"
    return str(value)


_SPEC = "nodehosts.setting"


def _setting(
    key: str,
    parse: Parser[Any] | None = None,
    *,
    help: str,
    flag: str | None = None,
    kind: FlagKind = "text",
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    shown_default: str | None = None,
    live: bool = False,
    view: bool = False,
    policy: bool = False,
) -> dict[str, Any]:
    """The metadata of a Settings field that declares its setting: `key` is `section.key` in
    the TOML file; the flag is `--` + the field name with dashes unless `flag` says otherwise;
    `choices` make the parser too."""
    section, _, toml_key = key.partition(".")
    if parse is None:
        if choices is None:
            raise TypeError(f"{key}: a setting needs a parser or choices")
        parse = _choice(choices)
    # name, default and an unset flag are filled in from the field (_declared).
    declared = Setting(
        name="",
        section=section,
        toml_key=toml_key,
        parse=parse,
        help=help,
        default=None,
        flag=flag or "",
        kind=kind,
        metavar=metavar,
        choices=choices,
        shown_default=shown_default,
        live=live,
        view=view,
        policy=policy,
    )
    return {_SPEC: declared}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon and the one-shot commands need, validated. Each field declares
    its setting (see `_setting`); the order here is the order of --help and the man page."""

    # [kubernetes]
    kubeconfig: Path | None = field(
        default=None,
        metadata=_setting(
            "kubernetes.kubeconfig",
            _path_or_none,
            help="kubeconfig",
            metavar="PATH",
            shown_default="in-cluster, then ~/.kube/config",
            live=True,
            view=True,
        ),
    )
    label_selector: str | None = field(
        default=None,
        metadata=_setting(
            "kubernetes.label_selector",
            _label_selector,
            help="only Nodes matching this label selector",
            metavar="SELECTOR",
            live=True,
            view=True,
            policy=True,
        ),
    )
    # Size caps on what the API sends, in bytes: one LIST page (500 realistic Nodes are ~5-6
    # MB) and one watch event line (etcd objects are at most 1.5 MiB). Same defaults as
    # nodehosts.adapters.kube.reflector.Tuning.
    max_page_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_setting(
            "kubernetes.max_page_bytes",
            _int_range(1 << 16, 1 << 32),
            help="largest LIST page",
            kind="int",
            metavar="BYTES",
        ),
    )
    max_line_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=_setting(
            "kubernetes.max_line_bytes",
            _int_range(1 << 16, 1 << 32),
            help="largest watch event",
            kind="int",
            metavar="BYTES",
        ),
    )
    # [records]
    domain: str = field(
        default="node.internal",
        metadata=_setting(
            "records.domain",
            _domain,
            help="domain for bare node names; '' for bare names only",
            metavar="DOMAIN",
            live=True,
            view=True,
            policy=True,
        ),
    )
    address_types: tuple[str, ...] = field(
        default=("InternalIP", "ExternalIP"),
        metadata=_setting(
            "records.address_types",
            _address_types,
            help="comma-separated address type preference",
            kind="csv",
            metavar="TYPES",
            live=True,
            view=True,
            policy=True,
        ),
    )
    static_hosts: Path | None = field(
        default=None,
        metadata=_setting(
            "records.static_hosts",
            _path_or_none,
            help="hosts-format file of extra, non-node hosts",
            metavar="PATH",
            live=True,
            view=True,
            policy=True,
        ),
    )
    exclude_not_ready: bool = field(
        default=False,
        metadata=_setting(
            "records.exclude_not_ready",
            _bool,
            help="leave out nodes that are not Ready",
            kind="bool",
            live=True,
            view=True,
            policy=True,
        ),
    )
    exclude_unschedulable: bool = field(
        default=False,
        metadata=_setting(
            "records.exclude_unschedulable",
            _bool,
            help="leave out cordoned nodes",
            kind="bool",
            live=True,
            view=True,
            policy=True,
        ),
    )
    # Dotted node names are published only under the domain or one of these.
    allowed_suffixes: tuple[str, ...] = field(
        default=(),
        metadata=_setting(
            "records.allowed_suffixes",
            _suffixes,
            help="publish dotted node names under this suffix too",
            flag="--allowed-suffix",
            kind="repeat",
            metavar="SUFFIX",
            shown_default="the domain",
            live=True,
            view=True,
            policy=True,
        ),
    )
    # Never a node's name: the cluster's own DNS domain (the admin may list others).
    reserved_suffixes: tuple[str, ...] = field(
        default=("cluster.local",),
        metadata=_setting(
            "records.reserved_suffixes",
            _suffixes,
            help="never publish a node name under this",
            flag="--reserved-suffix",
            kind="repeat",
            metavar="SUFFIX",
            live=True,
            view=True,
            policy=True,
        ),
    )
    # [hosts]
    hosts_file: Path | None = field(
        default=None,
        metadata=_setting(
            "hosts.file",
            _path_or_none,
            help="write the hosts file here; its directory must exist",
            metavar="PATH",
        ),
    )
    # [dns]
    dns_listen: tuple[Endpoint, ...] = field(
        default=(),
        metadata=_setting(
            "dns.listen",
            _endpoints(53),
            help="serve DNS on this address",
            kind="repeat",
            metavar="ADDR:PORT",
        ),
    )
    ttl: int = field(
        default=30,
        metadata=_setting(
            "dns.ttl",
            _int_range(0, 86400),
            help="TTL of DNS answers",
            kind="int",
            metavar="SECONDS",
        ),
    )
    negative_ttl: int = field(
        default=5,
        metadata=_setting(
            "dns.negative_ttl",
            _int_range(0, 86400),
            help="TTL of negative DNS answers",
            kind="int",
            metavar="SECONDS",
        ),
    )
    upstreams: tuple[Endpoint, ...] = field(
        default=(),
        metadata=_setting(
            "dns.upstream",
            _endpoints(53),
            help="forward other names here",
            flag="--upstream",
            kind="repeat",
            metavar="ADDR[:PORT]",
        ),
    )
    allow_recursion_from: tuple[Network, ...] = field(
        default=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        metadata=_setting(
            "dns.allow_recursion_from",
            _networks,
            help="clients allowed to use forwarding",
            kind="repeat",
            metavar="CIDR",
        ),
    )
    # The apex NS / SOA MNAME and the SOA RNAME; None: ns.<domain> and hostmaster.<domain>.
    dns_nameserver: str | None = field(
        default=None,
        metadata=_setting(
            "dns.nameserver",
            _optional_name,
            help="the zone's NS and SOA MNAME",
            metavar="NAME",
            shown_default="ns.<domain>",
        ),
    )
    dns_hostmaster: str | None = field(
        default=None,
        metadata=_setting(
            "dns.hostmaster",
            _optional_mailbox,
            help="the SOA RNAME, e.g. hostmaster@example.org",
            metavar="MAILBOX",
            shown_default="hostmaster.<domain>",
        ),
    )
    # [log]
    log_format: str = field(
        default="auto",
        metadata=_setting(
            "log.format",
            help="auto: console lines on a terminal, JSON otherwise",
            choices=LOG_FORMATS,
            live=True,
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_setting(
            "log.level",
            help="the least severe level logged",
            choices=LOG_LEVELS,
            live=True,
        ),
    )
    # [metrics]
    metrics_listen: Endpoint | None = field(
        default=None,
        metadata=_setting(
            "metrics.listen",
            _optional_endpoint,
            help="serve /metrics, /healthz and /readyz",
            metavar="ADDR:PORT",
        ),
    )
    # [control]
    control_socket: Path | None = field(
        default=Path("/run/nodehosts/control.sock"),
        metadata=_setting(
            "control.socket",
            _path_or_none,
            help="control socket for `dump --from daemon`; '' to disable",
            metavar="PATH",
        ),
    )
    # [state]
    state_dir: Path | None = field(
        default=Path("/var/lib/nodehosts"),
        metadata=_setting(
            "state.dir",
            _path_or_none,
            help="where the last published records are kept; '' to disable",
            metavar="PATH",
        ),
    )
    # [csr]
    approve_serving_csrs: bool = field(
        default=False,
        metadata=_setting(
            "csr.approve",
            _bool,
            help="approve kubelet serving CSRs that pass every check",
            kind="bool",
        ),
    )
    csr_allowed_cidrs: tuple[Network, ...] = field(
        default=(),
        metadata=_setting(
            "csr.allowed_cidrs",
            _networks,
            help="IP SANs must also lie in one of these",
            flag="--csr-allowed-cidr",
            kind="repeat",
            metavar="CIDR",
        ),
    )
    # The lab's service and pod ranges: a kubelet has no business with addresses in them.
    csr_denied_cidrs: tuple[Network, ...] = field(
        default=DEFAULT_DENIED_CIDRS,
        metadata=_setting(
            "csr.denied_cidrs",
            _networks,
            help="IP SANs must not lie in these",
            flag="--csr-denied-cidr",
            kind="repeat",
            metavar="CIDR",
        ),
    )
    csr_max_expiration_seconds: int | None = field(
        default=None,
        metadata=_setting(
            "csr.max_expiration_seconds",
            _optional_positive_int,
            help="refuse longer requested lifetimes",
            kind="int",
            metavar="SECONDS",
        ),
    )
    # The Node address types an IP SAN may be (a kubelet's ExternalIP is its own claim too).
    csr_address_types: tuple[str, ...] = field(
        default=("InternalIP",),
        metadata=_setting(
            "csr.address_types",
            _csr_address_types,
            help="node address types an IP SAN may be, comma-separated",
            kind="csv",
            metavar="TYPES",
        ),
    )
    # Where the settings came from, for logs and dump (not a setting itself).
    config_path: Path | None = field(default=None, compare=False)

    @property
    def record_policy(self) -> RecordPolicy:
        return RecordPolicy(
            domain=self.domain,
            address_types=self.address_types,
            exclude_not_ready=self.exclude_not_ready,
            exclude_unschedulable=self.exclude_unschedulable,
            allowed_suffixes=self.allowed_suffixes,
            reserved_suffixes=self.reserved_suffixes,
            nameserver=self.dns_nameserver or "",
        )

    def view_summary(self) -> dict[str, Any]:
        """The settings that decide what is published (`policy`), as JSON data (dump compares
        them)."""
        return {name: _json(getattr(self, name)) for name in POLICY_KEYS}

    @property
    def csr_policy(self) -> CsrPolicy:
        return CsrPolicy(
            allowed_cidrs=self.csr_allowed_cidrs,
            denied_cidrs=self.csr_denied_cidrs,
            max_expiration_seconds=self.csr_max_expiration_seconds,
            address_types=self.csr_address_types,
        )


def _json(value: Any) -> Any:
    """A setting's value as JSON data: paths and networks as strings, tuples as lists."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, tuple):
        return [_json(item) for item in value]
    return str(value)


# Every setting, in declaration order: the one table the rest is generated from.
def _declared(item: Field[Any]) -> Setting:
    declared: Setting = item.metadata[_SPEC]
    flag = declared.flag or "--" + item.name.replace("_", "-")
    return replace(declared, name=item.name, default=item.default, flag=flag)


SETTINGS: Mapping[str, Setting] = {
    item.name: _declared(item) for item in fields(Settings) if _SPEC in item.metadata
}
# (section, key) in the TOML file -> Settings field.
FILE_KEYS: Mapping[tuple[str, str], str] = {
    (setting.section, setting.toml_key): setting.name for setting in SETTINGS.values()
}
# Settings a reload applies to the running daemon; everything else (listeners, sockets, files
# the daemon owns, the CSR approver) is bound at start and needs a restart.
LIVE_KEYS = frozenset(name for name, setting in SETTINGS.items() if setting.live)
# Settings whose flags ask `dump` for a view other than the running daemon's.
VIEW_KEYS = frozenset(name for name, setting in SETTINGS.items() if setting.view)
# Settings that decide what is published (view_summary, in declaration order).
POLICY_KEYS = tuple(name for name, setting in SETTINGS.items() if setting.policy)


def flag_name(field_name: str) -> str:
    """The command-line flag of a setting (`--upstream` for upstreams)."""
    return SETTINGS[field_name].flag


def file_key(field_name: str) -> str:
    """`section.key` of a setting in the TOML file (`dns.upstream` for upstreams)."""
    return SETTINGS[field_name].file_key


def read_config_file(path: Path) -> dict[str, Any]:
    """Read and parse the TOML file; errors name the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: invalid TOML: {error}") from None
    except UnicodeDecodeError as error:  # TOML is UTF-8; tomllib lets this one through
        raise ConfigError(f"config file {path}: not UTF-8: {error}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: invalid TOML: nested too deeply") from None


def build_settings(
    file_data: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    config_path: Path | None = None,
) -> Settings:
    """Validate the file's values, then the flags' (which win), into one Settings.

    `overrides` maps Settings field names to flag values; None means not given."""
    raw: dict[str, tuple[str, Any]] = {}
    for section, table in file_data.items():
        if not isinstance(table, dict):
            raise ConfigError.at(section, f"expected a [{section}] table, got {_SHOW.repr(table)}")
        for key, value in table.items():
            name = FILE_KEYS.get((section, key))
            if name is None:
                raise ConfigError.at(f"{section}.{key}", "unknown key")
            raw[name] = (f"{section}.{key}", value)
    for name, value in overrides.items():
        if name not in SETTINGS:
            raise KeyError(name)  # a programming error, not the user's
        if value is not None:
            raw[name] = (flag_name(name), value)

    values = {name: SETTINGS[name].check(where, value) for name, (where, value) in raw.items()}
    settings = Settings(**values, config_path=config_path)
    _check_whole(settings)
    return settings


def _check_whole(settings: Settings) -> None:
    if settings.negative_ttl > settings.ttl:
        raise ConfigError.at(
            "dns.negative_ttl",
            f"{settings.negative_ttl} is longer than dns.ttl {settings.ttl}",
            key="negative_ttl",
        )
    if settings.dns_listen and not settings.domain:
        raise ConfigError.at(
            "records.domain",
            "DNS mode serves the zone <domain>, so it cannot be empty "
            "while dns.listen is set (got '')",
            key="domain",
        )
