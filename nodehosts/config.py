"""One immutable `Settings` object, built from the TOML file and the command line.

Contract: `build_settings(file_data, overrides)` validates everything once and either returns a
frozen `Settings` or raises `ConfigError` whose message names the bad key (as `section.key` for
the file, `--flag` for the command line) and the bad value. Nothing else in nodehosts reads the
config file or re-validates.
"""

from __future__ import annotations

import ipaddress
import re
import reprlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nodehosts.core.csr import CsrPolicy
from nodehosts.core.records import RecordPolicy

DEFAULT_CONFIG_PATH = Path("/etc/nodehosts/config.toml")
LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The address types a kubelet reports (k8s.io/api/core/v1 NodeAddressType).
ADDRESS_TYPES = ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Endpoint = tuple[str, int]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the value."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon and the one-shot commands need, validated."""

    # [kubernetes]
    kubeconfig: Path | None = None
    label_selector: str | None = None
    # Size caps on what the API sends, in bytes: one LIST page (500 realistic Nodes are ~5-6
    # MB) and one watch event line (etcd objects are at most 1.5 MiB). Same defaults as
    # nodehosts.adapters.kube.reflector.Tuning.
    max_page_bytes: int = 64 * 1024 * 1024
    max_line_bytes: int = 16 * 1024 * 1024
    # [records]
    domain: str = "node.internal"
    address_types: tuple[str, ...] = ("InternalIP", "ExternalIP")
    static_hosts: Path | None = None
    exclude_not_ready: bool = False
    exclude_unschedulable: bool = False
    # Dotted node names are published only under the domain or one of these.
    allowed_suffixes: tuple[str, ...] = ()
    # Never a node's name: the cluster's own DNS domain (the admin may list others).
    reserved_suffixes: tuple[str, ...] = ("cluster.local",)
    # [hosts]
    hosts_file: Path | None = None
    # [dns]
    dns_listen: tuple[Endpoint, ...] = ()
    ttl: int = 30
    negative_ttl: int = 5
    upstreams: tuple[Endpoint, ...] = ()
    allow_recursion_from: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # The apex NS / SOA MNAME and the SOA RNAME; None: ns.<domain> and hostmaster.<domain>.
    dns_nameserver: str | None = None
    dns_hostmaster: str | None = None
    # [log]
    log_format: str = "auto"
    log_level: str = "info"
    # [metrics]
    metrics_listen: Endpoint | None = None
    # [control]
    control_socket: Path | None = Path("/run/nodehosts/control.sock")
    # [state]
    state_dir: Path | None = Path("/var/lib/nodehosts")
    # [csr]
    approve_serving_csrs: bool = False
    csr_allowed_cidrs: tuple[Network, ...] = ()
    # The lab's service and pod ranges: a kubelet has no business with addresses in them.
    csr_denied_cidrs: tuple[Network, ...] = (
        ipaddress.ip_network("10.32.0.0/24"),
        ipaddress.ip_network("10.200.0.0/16"),
    )
    csr_max_expiration_seconds: int | None = None
    # The Node address types an IP SAN may be (a kubelet's ExternalIP is its own claim too).
    csr_address_types: tuple[str, ...] = ("InternalIP",)
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
        """The settings that decide what is published, as JSON data (dump compares them)."""
        return {
            "label_selector": self.label_selector,
            "domain": self.domain,
            "address_types": list(self.address_types),
            "exclude_not_ready": self.exclude_not_ready,
            "exclude_unschedulable": self.exclude_unschedulable,
            "static_hosts": str(self.static_hosts) if self.static_hosts else None,
            "allowed_suffixes": list(self.allowed_suffixes),
            "reserved_suffixes": list(self.reserved_suffixes),
        }

    @property
    def csr_policy(self) -> CsrPolicy:
        return CsrPolicy(
            allowed_cidrs=self.csr_allowed_cidrs,
            denied_cidrs=self.csr_denied_cidrs,
            max_expiration_seconds=self.csr_max_expiration_seconds,
            address_types=self.csr_address_types,
        )


# (section, key) in the TOML file -> Settings field. The flag of each field is `--` + the
# field name with dashes, except where FLAG_NAMES says otherwise.
FILE_KEYS: Mapping[tuple[str, str], str] = {
    ("kubernetes", "kubeconfig"): "kubeconfig",
    ("kubernetes", "label_selector"): "label_selector",
    ("kubernetes", "max_page_bytes"): "max_page_bytes",
    ("kubernetes", "max_line_bytes"): "max_line_bytes",
    ("records", "domain"): "domain",
    ("records", "address_types"): "address_types",
    ("records", "static_hosts"): "static_hosts",
    ("records", "exclude_not_ready"): "exclude_not_ready",
    ("records", "exclude_unschedulable"): "exclude_unschedulable",
    ("records", "allowed_suffixes"): "allowed_suffixes",
    ("records", "reserved_suffixes"): "reserved_suffixes",
    ("hosts", "file"): "hosts_file",
    ("dns", "listen"): "dns_listen",
    ("dns", "ttl"): "ttl",
    ("dns", "negative_ttl"): "negative_ttl",
    ("dns", "upstream"): "upstreams",
    ("dns", "allow_recursion_from"): "allow_recursion_from",
    ("dns", "nameserver"): "dns_nameserver",
    ("dns", "hostmaster"): "dns_hostmaster",
    ("log", "format"): "log_format",
    ("log", "level"): "log_level",
    ("metrics", "listen"): "metrics_listen",
    ("control", "socket"): "control_socket",
    ("state", "dir"): "state_dir",
    ("csr", "approve"): "approve_serving_csrs",
    ("csr", "allowed_cidrs"): "csr_allowed_cidrs",
    ("csr", "denied_cidrs"): "csr_denied_cidrs",
    ("csr", "max_expiration_seconds"): "csr_max_expiration_seconds",
    ("csr", "address_types"): "csr_address_types",
}
FLAG_NAMES: Mapping[str, str] = {
    "upstreams": "--upstream",
    "csr_allowed_cidrs": "--csr-allowed-cidr",
    "csr_denied_cidrs": "--csr-denied-cidr",
    "allowed_suffixes": "--allowed-suffix",
    "reserved_suffixes": "--reserved-suffix",
}


def flag_name(field_name: str) -> str:
    return FLAG_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def file_key(field_name: str) -> str:
    for (section, key), name in FILE_KEYS.items():
        if name == field_name:
            return f"{section}.{key}"
    raise KeyError(field_name)


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
    """Validate the file's values, then the flags' (which win), into one Settings."""
    raw: dict[str, tuple[str, Any]] = {}
    for section, table in file_data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a [{section}] table, got {_SHOW.repr(table)}")
        for key, value in table.items():
            name = FILE_KEYS.get((section, key))
            if name is None:
                raise ConfigError(f"{section}.{key}: unknown key")
            raw[name] = (f"{section}.{key}", value)
    for name, value in overrides.items():
        if name not in _FIELD_NAMES:
            raise KeyError(name)  # a programming error, not the user's
        if value is not None:
            raw[name] = (flag_name(name), value)

    values: dict[str, Any] = {}
    for name, (where, value) in raw.items():
        values[name] = _VALIDATORS[name](where, value)
    settings = Settings(**values, config_path=config_path)
    _check_whole(settings)
    return settings


def _check_whole(settings: Settings) -> None:
    if settings.negative_ttl > settings.ttl:
        raise ConfigError(
            f"dns.negative_ttl: {settings.negative_ttl} is longer than dns.ttl {settings.ttl}"
        )
    if settings.dns_listen and not settings.domain:
        raise ConfigError(
            "records.domain: DNS mode serves the zone <domain>, so it cannot be empty "
            "while dns.listen is set (got '')"
        )


# --- validators: each takes (where, value) and returns the typed value or raises ConfigError.

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# Values as errors show them: bounded, so a huge or deeply nested value makes a short message
# instead of a RecursionError.
_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict = 4, 20, 20
_SHOW.maxstring = _SHOW.maxother = 200


def _bad(where: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{where}: {why} (got {_SHOW.repr(value)})")


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
    # At most 189 characters leaves room for a 63-character label within DNS's 253.
    if domain and (
        len(domain) > 189 or not all(_LABEL.match(label) for label in domain.split("."))
    ):
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
    if not local or not _LABEL.match(local.lower()):
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


def _int_range(low: int, high: int):  # type: ignore[no-untyped-def]
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


def _endpoints(default_port: int | None):  # type: ignore[no-untyped-def]
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
    out = []
    for item in _string_list(where, value):
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError as error:
            raise _bad(where, item, f"not a network in CIDR form: {error}") from None
    return tuple(out)


def _choice(choices: tuple[str, ...]):  # type: ignore[no-untyped-def]
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


_VALIDATORS: Mapping[str, Any] = {
    "kubeconfig": _path_or_none,
    "label_selector": _label_selector,
    "max_page_bytes": _int_range(1 << 16, 1 << 32),
    "max_line_bytes": _int_range(1 << 16, 1 << 32),
    "domain": _domain,
    "address_types": _address_types,
    "static_hosts": _path_or_none,
    "exclude_not_ready": _bool,
    "exclude_unschedulable": _bool,
    "allowed_suffixes": _suffixes,
    "reserved_suffixes": _suffixes,
    "hosts_file": _path_or_none,
    "dns_listen": _endpoints(53),
    "ttl": _int_range(0, 86400),
    "negative_ttl": _int_range(0, 86400),
    "upstreams": _endpoints(53),
    "allow_recursion_from": _networks,
    "dns_nameserver": _optional_name,
    "dns_hostmaster": _optional_mailbox,
    "log_format": _choice(LOG_FORMATS),
    "log_level": _choice(LOG_LEVELS),
    "metrics_listen": _optional_endpoint,
    "control_socket": _path_or_none,
    "state_dir": _path_or_none,
    "approve_serving_csrs": _bool,
    "csr_allowed_cidrs": _networks,
    "csr_denied_cidrs": _networks,
    "csr_max_expiration_seconds": _optional_positive_int,
    "csr_address_types": _csr_address_types,
}
_FIELD_NAMES = frozenset(f.name for f in fields(Settings)) - {"config_path"}
assert set(_VALIDATORS) == _FIELD_NAMES, "every setting needs a validator"
