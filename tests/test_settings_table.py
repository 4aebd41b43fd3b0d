"""The parts generated from config.SETTINGS agree: each TOML key has a flag that sets the same
value, --help shows each default, a bad value's error names its key, and the settings that
change `dump`'s view or policy are the ones declared so."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from nodehosts import cli
from nodehosts.config import (
    FILE_KEYS,
    LIVE_KEYS,
    POLICY_KEYS,
    SETTINGS,
    VIEW_KEYS,
    ConfigError,
    Settings,
    build_settings,
)

# One value per setting, other than its default: as the TOML file spells it, and as flags.
EXAMPLES: dict[str, tuple[Any, list[str]]] = {
    "kubeconfig": ("/etc/k", ["--kubeconfig", "/etc/k"]),
    "label_selector": ("a=b", ["--label-selector", "a=b"]),
    "max_page_bytes": (1 << 20, ["--max-page-bytes", "1048576"]),
    "max_line_bytes": (1 << 17, ["--max-line-bytes", "131072"]),
    "domain": ("lab.example", ["--domain", "lab.example"]),
    "address_types": (["ExternalIP", "InternalIP"], ["--address-types", "ExternalIP,InternalIP"]),
    "static_hosts": ("/etc/s", ["--static-hosts", "/etc/s"]),
    "exclude_not_ready": (True, ["--exclude-not-ready"]),
    "exclude_unschedulable": (True, ["--exclude-unschedulable"]),
    "allowed_suffixes": (
        ["a.example", "b.example"],
        ["--allowed-suffix", "a.example", "--allowed-suffix", "b.example"],
    ),
    "reserved_suffixes": (["x.local"], ["--reserved-suffix", "x.local"]),
    "hosts_file": ("/h/nodes.hosts", ["--hosts-file", "/h/nodes.hosts"]),
    "dns_listen": (
        ["127.0.0.1:5353", "[::1]:53"],
        ["--dns-listen", "127.0.0.1:5353", "--dns-listen", "[::1]:53"],
    ),
    "ttl": (60, ["--ttl", "60"]),
    "negative_ttl": (3, ["--negative-ttl", "3"]),
    "upstreams": (["192.0.2.1"], ["--upstream", "192.0.2.1"]),
    "allow_recursion_from": (["10.0.0.0/8"], ["--allow-recursion-from", "10.0.0.0/8"]),
    "dns_nameserver": ("ns1.example.org", ["--dns-nameserver", "ns1.example.org"]),
    "dns_hostmaster": ("admin@example.org", ["--dns-hostmaster", "admin@example.org"]),
    "log_format": ("json", ["--log-format", "json"]),
    "log_level": ("debug", ["--log-level", "debug"]),
    "metrics_listen": ("127.0.0.1:9153", ["--metrics-listen", "127.0.0.1:9153"]),
    "control_socket": ("/c.sock", ["--control-socket", "/c.sock"]),
    "state_dir": ("/st", ["--state-dir", "/st"]),
    "approve_serving_csrs": (True, ["--approve-serving-csrs"]),
    "csr_allowed_cidrs": (["10.240.0.0/24"], ["--csr-allowed-cidr", "10.240.0.0/24"]),
    "csr_denied_cidrs": (["10.1.0.0/16"], ["--csr-denied-cidr", "10.1.0.0/16"]),
    "csr_max_expiration_seconds": (3600, ["--csr-max-expiration-seconds", "3600"]),
    "csr_address_types": (
        ["InternalIP", "ExternalIP"],
        ["--csr-address-types", "InternalIP,ExternalIP"],
    ),
}


def from_flags(command: str, *flags: str) -> Settings:
    args = cli.make_parser().parse_args([command, "--config", "", *flags])
    return cli.settings_from_args(args)


def test_every_setting_has_an_example() -> None:
    """(A new setting gets its example here, so the tests below cover it.)"""
    assert set(EXAMPLES) == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_every_toml_key_has_a_flag_that_sets_the_same_value(command: str, name: str) -> None:
    setting = SETTINGS[name]
    value, flags = EXAMPLES[name]
    from_file = build_settings({setting.section: {setting.toml_key: value}}, {})
    assert getattr(from_file, name) != setting.default, "the example must not be the default"
    assert getattr(from_flags(command, *flags), name) == getattr(from_file, name)
    assert FILE_KEYS[setting.section, setting.toml_key] == name


def test_dump_takes_the_flags_of_the_records_the_source_and_the_logs() -> None:
    """dump builds the same records as the daemon would: it takes every setting that decides
    them (and --control-socket to find the daemon), not the publishing ones."""
    for name in ("kubeconfig", "max_page_bytes", *POLICY_KEYS, "log_level", "control_socket"):
        assert getattr(from_flags("dump", *EXAMPLES[name][1]), name) == getattr(
            from_flags("run", *EXAMPLES[name][1]), name
        )
    with pytest.raises(SystemExit):
        cli.make_parser().parse_args(["dump", "--ttl", "60"])


def help_lines(command: str) -> dict[str, str]:
    """Setting -> the help --help prints for its flag in `nodehosts COMMAND` (as the man page
    reads it: argparse's expanded help of the action)."""
    parser = cli.make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices[command]
    formatter = sub._get_formatter()
    return {a.dest: formatter._expand_help(a) for a in sub._actions if a.dest in SETTINGS}


def shown(value: Any) -> list[str]:
    """The default's parts as a reader looks for them in help."""
    if isinstance(value, tuple):
        return [str(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 20:
        return [f"{value >> 20} MiB"]
    return [str(value)]


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_help_shows_every_default(command: str) -> None:
    """Each flag whose setting has a default (not unset, off or empty) shows it; the others
    with a meaning for unset say it (ns.<domain>, the domain, in-cluster...)."""
    lines = help_lines(command)
    assert set(lines) == set(SETTINGS)
    for setting in SETTINGS.values():
        help_line = lines[setting.name]
        if setting.shown_default is not None:
            assert f"default: {setting.shown_default})" in help_line, setting.flag
        elif setting.default not in (None, False, ()):
            assert "default: " in help_line, setting.flag
            for part in shown(setting.default):
                assert part in help_line.split("default: ", 1)[1], (setting.flag, part)
        else:
            assert "default" not in help_line, setting.flag


def test_demo_help_shows_its_own_log_level() -> None:
    assert help_lines("demo")["log_level"].endswith("(default: warning)")


def test_help_in_the_terminal_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """What `nodehosts run --help` prints (wrapped) carries the generated defaults."""
    with pytest.raises(SystemExit) as exited:
        cli.make_parser().parse_args(["run", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "TTL of DNS answers (default: 30)" in text
    assert "(repeatable; default: 10.32.0.0/24, 10.200.0.0/16)" in text
    assert "largest LIST page (default: 64 MiB)" in text


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_bad_value_names_its_key_in_the_file_and_its_flag(name: str) -> None:
    """A value no parser accepts: the error starts with section.key (file) or --flag and
    carries the setting's key."""
    setting = SETTINGS[name]
    bad = {"not": "a value"}
    with pytest.raises(ConfigError) as caught:
        build_settings({setting.section: {setting.toml_key: bad}}, {})
    assert (caught.value.key, caught.value.where) == (name, setting.file_key)
    assert str(caught.value).startswith(f"{setting.file_key}: ")
    with pytest.raises(ConfigError) as caught:
        build_settings({}, {name: bad})
    assert (caught.value.key, caught.value.where) == (name, setting.flag)
    assert str(caught.value) == f"{setting.flag}: {caught.value.reason}"


def test_errors_of_the_whole_and_of_the_file_carry_their_key() -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings({"dns": {"ttl": 10, "negative_ttl": 20}}, {})
    assert caught.value.key == "negative_ttl"
    with pytest.raises(ConfigError) as caught:
        build_settings({"records": {"domian": "x"}}, {})
    assert (caught.value.key, caught.value.where) == (None, "records.domian")


def test_a_bad_flag_value_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command line: the message names the flag, not the TOML key."""
    assert cli.main(["run", "--config", "", "--hosts-file", "/tmp/x", "--ttl", "100000"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("nodehosts: error: --ttl: expected a whole number from 0 to 86400")


@pytest.mark.parametrize("name", sorted(VIEW_KEYS))
def test_view_flags_make_dump_list_itself(name: str) -> None:
    """A flag that changes what dump would show: `--from auto` means a fresh LIST."""
    args = cli.make_parser().parse_args(["dump", *EXAMPLES[name][1]])
    assert cli._dump_source(args) == "list"


def test_other_flags_leave_dump_asking_the_daemon() -> None:
    for flags in ([], ["--max-page-bytes", "1048576"], ["--log-level", "debug"]):
        assert cli._dump_source(cli.make_parser().parse_args(["dump", *flags])) == "auto"


def test_dump_diff_warns_about_every_policy_setting_that_differs() -> None:
    """The daemon's policy (view_summary) against this command's: each differing key named."""
    daemon = Settings().view_summary()
    assert list(daemon) == list(POLICY_KEYS)
    for name in POLICY_KEYS:
        ours = from_flags("dump", *EXAMPLES[name][1])
        assert [d.split(" ", 1)[0] for d in cli._policy_differences(ours, daemon)] == [name]


def test_view_summary_is_json_data() -> None:
    settings = from_flags("dump", "--static-hosts", "/etc/s", "--allowed-suffix", "a.example")
    summary = settings.view_summary()
    assert summary["static_hosts"] == "/etc/s"
    assert summary["allowed_suffixes"] == ["a.example"]
    assert summary["reserved_suffixes"] == ["cluster.local"]


def test_live_keys_are_the_record_policy_the_source_and_the_logs() -> None:
    """What a reload applies without a restart; listeners and owned files are not."""
    assert {
        "kubeconfig",
        "label_selector",
        "domain",
        "address_types",
        "static_hosts",
        "exclude_not_ready",
        "exclude_unschedulable",
        "allowed_suffixes",
        "reserved_suffixes",
        "log_format",
        "log_level",
    } == LIVE_KEYS


def test_defaults_are_the_settings_defaults() -> None:
    """(The table and the dataclass are one declaration.)"""
    defaults = Settings()
    for name, setting in SETTINGS.items():
        assert getattr(defaults, name) == setting.default
    assert defaults.csr_denied_cidrs == (
        ipaddress.ip_network("10.32.0.0/24"),
        ipaddress.ip_network("10.200.0.0/16"),
    )
    assert defaults.control_socket == Path("/run/nodehosts/control.sock")
