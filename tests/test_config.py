"""Settings from TOML and flags: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nodehosts.config import ConfigError, Settings, build_settings, read_config_file


def test_no_file_and_no_flags_gives_the_documented_defaults() -> None:
    """An empty config is the lab's defaults."""
    settings = build_settings({}, {})
    assert settings == Settings()
    assert settings.domain == "node.internal"
    assert settings.address_types == ("InternalIP", "ExternalIP")
    assert settings.ttl == 30 and settings.negative_ttl == 5
    assert settings.hosts_file is None and settings.dns_listen == ()


def test_file_values_are_typed() -> None:
    """Every section's keys become typed values."""
    settings = build_settings(
        {
            "kubernetes": {"kubeconfig": "/etc/nodehosts/kubeconfig", "label_selector": "a=b"},
            "records": {
                "domain": "Cluster.Lab.",
                "address_types": ["ExternalIP", "InternalIP"],
                "static_hosts": "/etc/nodehosts/static-hosts",
                "exclude_not_ready": True,
                "exclude_unschedulable": True,
            },
            "hosts": {"file": "/var/lib/nodehosts/hosts/nodes.hosts"},
            "dns": {
                "listen": ["10.240.0.40:53", "[::1]:5353", "127.0.0.1"],
                "ttl": 60,
                "negative_ttl": 10,
                "upstream": ["1.1.1.1", "9.9.9.9:5353"],
                "allow_recursion_from": ["10.240.0.0/24"],
            },
            "log": {"format": "json", "level": "DEBUG"},
            "metrics": {"listen": "127.0.0.1:9153"},
            "control": {"socket": ""},
            "state": {"dir": "/tmp/state"},
            "csr": {"approve": True, "allowed_cidrs": ["10.240.0.0/24"]},
        },
        {},
    )
    assert settings.kubeconfig == Path("/etc/nodehosts/kubeconfig")
    assert settings.label_selector == "a=b"
    assert settings.domain == "cluster.lab"
    assert settings.address_types == ("ExternalIP", "InternalIP")
    assert settings.exclude_not_ready and settings.exclude_unschedulable
    assert settings.hosts_file == Path("/var/lib/nodehosts/hosts/nodes.hosts")
    assert settings.dns_listen == (("10.240.0.40", 53), ("::1", 5353), ("127.0.0.1", 53))
    assert settings.upstreams == (("1.1.1.1", 53), ("9.9.9.9", 5353))
    assert settings.allow_recursion_from == (ipaddress.ip_network("10.240.0.0/24"),)
    assert (settings.log_format, settings.log_level) == ("json", "debug")
    assert settings.metrics_listen == ("127.0.0.1", 9153)
    assert settings.control_socket is None
    assert settings.approve_serving_csrs is True
    assert settings.record_policy.domain == "cluster.lab"


def test_flags_override_the_file() -> None:
    """A flag wins over the same key in the file; unset flags leave the file's value."""
    settings = build_settings(
        {"records": {"domain": "from.file", "exclude_not_ready": True}},
        {"domain": "from.flag", "exclude_not_ready": None, "address_types": "InternalIP"},
    )
    assert settings.domain == "from.flag"
    assert settings.exclude_not_ready is True
    assert settings.address_types == ("InternalIP",)


def test_an_empty_domain_means_bare_names_only() -> None:
    """domain = '' is allowed and stays empty."""
    assert build_settings({"records": {"domain": ""}}, {}).domain == ""


@pytest.mark.parametrize(
    ("file_data", "overrides", "named"),
    [
        ({"records": {"domian": "x"}}, {}, "records.domian: unknown key"),
        ({"nosuch": {"a": 1}}, {}, "nosuch.a: unknown key"),
        ({"records": "x"}, {}, "records: expected a [records] table"),
        ({"records": {"domain": "bad_domain!"}}, {}, "records.domain"),
        ({"records": {"address_types": ["InternalIP", "Bogus"]}}, {}, "records.address_types"),
        ({"records": {"address_types": []}}, {}, "records.address_types"),
        ({"records": {"exclude_not_ready": "yes"}}, {}, "records.exclude_not_ready"),
        ({"dns": {"listen": ["localhost:53"]}}, {}, "dns.listen"),
        ({"dns": {"listen": ["127.0.0.1:99999"]}}, {}, "dns.listen"),
        ({"dns": {"ttl": -1}}, {}, "dns.ttl"),
        ({"dns": {"ttl": True}}, {}, "dns.ttl"),
        ({"dns": {"ttl": 10, "negative_ttl": 20}}, {}, "dns.negative_ttl"),
        ({"dns": {"allow_recursion_from": ["10.0.0.1/8"]}}, {}, "dns.allow_recursion_from"),
        ({"log": {"format": "xml"}}, {}, "log.format"),
        ({"metrics": {"listen": "127.0.0.1"}}, {}, "metrics.listen"),
        ({}, {"domain": "-bad-"}, "--domain"),
        ({}, {"dns_listen": ["nope"]}, "--dns-listen"),
        ({}, {"upstreams": ["1.1.1.1:x"]}, "--upstream"),
        ({}, {"csr_max_expiration_seconds": 5}, "--csr-max-expiration-seconds"),
        ({"dns": {"listen": ["127.0.0.1:53"]}, "records": {"domain": ""}}, {}, "records.domain"),
        ({"dns": {"nameserver": "ns"}}, {}, "dns.nameserver"),
        ({"dns": {"hostmaster": "a b@example.org"}}, {}, "dns.hostmaster"),
        # A trailing newline in the local part once passed (a `$` regex anchor matches before it)
        # and would have gone into the SOA RNAME.
        ({"dns": {"hostmaster": "host\n@example.org"}}, {}, "dns.hostmaster"),
    ],
)
def test_bad_values_name_the_key_and_the_value(
    file_data: dict[str, object], overrides: dict[str, object], named: str
) -> None:
    """Every validation error starts with the key (file) or the flag (command line)."""
    with pytest.raises(ConfigError) as caught:
        build_settings(file_data, overrides)
    assert str(caught.value).startswith(named)


def test_settings_are_immutable() -> None:
    """Nothing can change a Settings after validation."""
    settings = build_settings({}, {})
    with pytest.raises(AttributeError):
        settings.domain = "x"  # type: ignore[misc]


def test_a_broken_toml_file_names_the_file(tmp_path: Path) -> None:
    """A syntax error reports the path and TOML's own position message."""
    path = tmp_path / "config.toml"
    path.write_text("[records\ndomain = 1\n")
    with pytest.raises(ConfigError, match=str(path)):
        read_config_file(path)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'[records]\ndomain = "caf\xe9"\n', "not UTF-8"),
        (b"[records]\ndomain = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
    ],
)
def test_a_file_tomllib_cannot_decode_is_a_config_error(
    tmp_path: Path, data: bytes, why: str
) -> None:
    """Issue 12: a Latin-1 file escaped as UnicodeDecodeError (a traceback, exit 1, and on
    SIGHUP a reload task that died silently); deep nesting as RecursionError."""
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=f"config file {path}: .*{why}"):
        read_config_file(path)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing --config file is reported, not a traceback."""
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "absent.toml")


def test_csr_ranges_default_to_the_labs_service_and_pod_ranges() -> None:
    """Without [csr] keys the approver refuses IP SANs in 10.32.0.0/24 and 10.200.0.0/16."""
    policy = build_settings({}, {}).csr_policy
    assert [str(net) for net in policy.denied_cidrs] == ["10.32.0.0/24", "10.200.0.0/16"]
    custom = build_settings(
        {"csr": {"denied_cidrs": ["10.96.0.0/12"], "max_expiration_seconds": 86400}}, {}
    ).csr_policy
    assert [str(net) for net in custom.denied_cidrs] == ["10.96.0.0/12"]
    assert custom.max_expiration_seconds == 86400


def test_the_zone_names_accept_a_name_or_a_mailbox() -> None:
    """dns.nameserver is a name; dns.hostmaster is a mailbox or its DNS form."""
    settings = build_settings(
        {"dns": {"nameserver": "LB-0.Node.Internal.", "hostmaster": "Admin@Example.org"}}, {}
    )
    assert settings.dns_nameserver == "lb-0.node.internal"
    assert settings.dns_hostmaster == "admin@example.org"
    assert build_settings({"dns": {"hostmaster": "admin.example.org"}}, {}).dns_hostmaster == (
        "admin.example.org"
    )


# --- trust settings (issue 12) ------------------------------------------------------------


def test_trust_settings_default_to_the_domain_cluster_local_and_internal_ip() -> None:
    """No dotted name outside the domain, cluster.local reserved, IP SANs from InternalIP."""
    settings = build_settings({}, {})
    assert settings.allowed_suffixes == ()
    assert settings.reserved_suffixes == ("cluster.local",)
    assert settings.csr_address_types == ("InternalIP",)
    policy = settings.record_policy
    assert (policy.allowed_suffixes, policy.reserved_suffixes) == ((), ("cluster.local",))
    assert policy.nameserver == "ns.node.internal"
    assert settings.csr_policy.address_types == ("InternalIP",)


def test_trust_settings_from_the_file_and_flags() -> None:
    file_data = {
        "records": {"allowed_suffixes": ["Example.COM.", "lab.example"], "reserved_suffixes": []},
        "dns": {"nameserver": "dns1.node.internal"},
        "csr": {"address_types": ["InternalIP", "ExternalIP"]},
    }
    settings = build_settings(file_data, {})
    assert settings.allowed_suffixes == ("example.com", "lab.example")
    assert settings.reserved_suffixes == ()
    assert settings.csr_address_types == ("InternalIP", "ExternalIP")
    assert settings.record_policy.nameserver == "dns1.node.internal"
    assert settings.view_summary()["allowed_suffixes"] == ["example.com", "lab.example"]
    flagged = build_settings(
        file_data,
        {"allowed_suffixes": ["corp.example"], "reserved_suffixes": ["k8s.local"],
         "csr_address_types": "InternalIP"},
    )  # fmt: skip
    assert flagged.allowed_suffixes == ("corp.example",)
    assert flagged.reserved_suffixes == ("k8s.local",)
    assert flagged.csr_address_types == ("InternalIP",)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("records", "allowed_suffixes", ["bad_suffix"], "records.allowed_suffixes"),
        ("records", "allowed_suffixes", [""], "records.allowed_suffixes"),
        ("records", "reserved_suffixes", "x..y", "records.reserved_suffixes"),
        ("csr", "address_types", ["Hostname"], "csr.address_types"),
        ("csr", "address_types", [], "csr.address_types"),
    ],
)
def test_bad_trust_settings_name_the_key(
    section: str, key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings({section: {key: value}}, {})


def test_trust_settings_apply_on_reload_without_a_restart() -> None:
    """records.allowed_suffixes and records.reserved_suffixes are record policy: live."""
    from nodehosts.app.reloader import plan_settings_change

    old = build_settings({}, {})
    new = build_settings({}, {"allowed_suffixes": ["example.com"], "reserved_suffixes": []})
    applied, live, restart = plan_settings_change(old, new)
    assert (live, restart) == (["allowed_suffixes", "reserved_suffixes"], [])
    assert applied.record_policy.allowed_suffixes == ("example.com",)
    changed = build_settings({}, {"csr_address_types": "InternalIP,ExternalIP"})
    assert plan_settings_change(old, changed)[2] == ["csr_address_types"]


def test_the_api_size_caps_are_settings_with_the_sources_defaults() -> None:
    """Issue 12: the caps on a LIST page and a watch line are configurable; the defaults are
    the source's own."""
    from nodehosts.adapters.kube.reflector import Tuning

    defaults = build_settings({}, {})
    assert (defaults.max_page_bytes, defaults.max_line_bytes) == (
        Tuning().max_page_bytes,
        Tuning().max_line_bytes,
    )
    settings = build_settings(
        {"kubernetes": {"max_page_bytes": 8 << 20, "max_line_bytes": 1 << 20}},
        {"max_line_bytes": 2 << 20},
    )
    assert (settings.max_page_bytes, settings.max_line_bytes) == (8 << 20, 2 << 20)
    with pytest.raises(ConfigError, match=r"kubernetes\.max_line_bytes"):
        build_settings({"kubernetes": {"max_line_bytes": 100}}, {})
