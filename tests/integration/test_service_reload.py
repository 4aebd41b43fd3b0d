"""Live reloads of `nodehosts run`: the static hosts file, the config file and the credentials
are picked up without a restart (and on SIGHUP); a broken config is rejected and the running
one keeps working. The real CLI process against the fake API server."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import DaemonProcess, start_daemon
from tests.helpers.files import replace_by_rename, wait_for_line
from tests.helpers.polling import wait_until

TOKEN = "reload-token"
WORKER_0 = "10.240.0.101 worker-0.node.internal worker-0"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN,
        lab_node("controller-0", "10.240.0.10", labels={"role": "cp"}),
        lab_node("worker-0", "10.240.0.101", labels={"role": "worker"}),
    ) as server:
        yield server


def events(daemon: DaemonProcess, name: str, **keys: object) -> list[dict[str, object]]:
    return [
        event
        for event in daemon.events_named(name)
        if all(event.get(key) == value for key, value in keys.items())
    ]


def wait_for_event(
    daemon: DaemonProcess, name: str, *, count: int = 1, **keys: object
) -> list[dict]:
    return wait_until(
        lambda: events(daemon, name, **keys),
        until=lambda found: len(found) >= count,
        timeout=15,
        what=f"{count} {name} log line(s) with {keys}",
    )


def test_an_edited_static_hosts_file_is_served_without_a_signal(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """An editor's save and an in-place append both reach the hosts file; a deletion is
    refused and the last static hosts stay."""
    hosts = tmp_path / "nodes.hosts"
    static = tmp_path / "static-hosts"
    static.write_text("10.240.0.40 lb-0\n")
    args = ("--hosts-file", str(hosts), "--static-hosts", str(static))
    with start_daemon(api, tmp_path, *args, token=TOKEN) as daemon:
        wait_for_line(hosts, "10.240.0.40 lb-0.node.internal lb-0")
        wait_for_line(hosts, WORKER_0)

        replace_by_rename(static, "10.240.0.41 lb-0\n")
        text = wait_for_line(hosts, "10.240.0.41 lb-0.node.internal lb-0")
        assert "10.240.0.40" not in text

        with static.open("a") as handle:
            handle.write("10.240.0.42 registry\n")
        wait_for_line(hosts, "10.240.0.42 registry.node.internal registry")
        assert len(events(daemon, "static_hosts_reloaded")) == 2

        static.unlink()
        wait_for_event(daemon, "static_hosts_rejected")
        api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
        text = wait_for_line(hosts, "10.240.0.150 worker-1.node.internal worker-1")
        assert "10.240.0.42 registry.node.internal registry" in text.splitlines()
        assert daemon.stop()[0] == 0


def test_sighup_reloads_everything_on_demand(api: FakeApiServer, tmp_path: Path) -> None:
    """SIGHUP re-reads the static hosts, the config and rebuilds the client (a relist); the
    daemon keeps running (the default action of SIGHUP would end it)."""
    hosts = tmp_path / "nodes.hosts"
    static = tmp_path / "static-hosts"
    static.write_text("10.240.0.40 lb-0\n")
    args = ("--hosts-file", str(hosts), "--static-hosts", str(static))
    with start_daemon(api, tmp_path, *args, token=TOKEN) as daemon:
        wait_for_line(hosts, "10.240.0.40 lb-0.node.internal lb-0")
        lists = len(daemon.events_named("nodes_synced"))
        daemon.process.send_signal(signal.SIGHUP)
        wait_for_event(daemon, "reload_finished", trigger="SIGHUP")
        assert events(daemon, "reload_requested", trigger="SIGHUP")
        assert events(daemon, "credentials_reloaded", trigger="SIGHUP")
        wait_until(
            lambda: len(daemon.events_named("nodes_synced")),
            until=lambda n: n > lists,
            timeout=15,
            what="a relist with the rebuilt client",
        )
        daemon.process.send_signal(signal.SIGHUP)
        wait_for_event(daemon, "reload_finished", trigger="SIGHUP", count=2)
        api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
        wait_for_line(hosts, "10.240.0.150 worker-1.node.internal worker-1")
        assert daemon.process.poll() is None
        assert daemon.stop()[0] == 0


CONFIG = """\
[kubernetes]
kubeconfig = "{kubeconfig}"
label_selector = "{selector}"
[records]
domain = "{domain}"
[hosts]
file = "{hosts}"
[control]
socket = ""
[state]
dir = ""
[metrics]
listen = "{metrics}"
[log]
level = "{level}"
"""


def test_the_config_file_is_reloaded_live_and_a_broken_edit_is_rejected(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """A good edit applies at once (domain, label selector, log level); a bad value or bad TOML
    is rejected, naming the key, and the running config keeps publishing; keys bound at start
    are reported as needing a restart."""
    hosts = tmp_path / "nodes.hosts"
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    config = tmp_path / "config.toml"
    values = {
        "kubeconfig": kubeconfig,
        "selector": "",
        "domain": "lab",
        "hosts": hosts,
        "metrics": "",
        "level": "info",
    }
    config.write_text(CONFIG.format(**values))
    with DaemonProcess(["--config", str(config)], workdir=tmp_path) as daemon:
        wait_for_line(hosts, "10.240.0.101 worker-0.lab worker-0")

        replace_by_rename(config, CONFIG.format(**{**values, "domain": "not a domain!"}))
        rejected = wait_for_event(daemon, "config_rejected")[-1]
        assert rejected["key"] == "records.domain"
        assert "not a valid DNS domain" in str(rejected["error"])
        api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
        wait_for_line(hosts, "10.240.0.150 worker-1.lab worker-1")

        replace_by_rename(config, "[records\n")
        rejected = wait_for_event(daemon, "config_rejected", count=2)[-1]
        assert rejected["key"] == "file"
        assert "invalid TOML" in str(rejected["error"])

        replace_by_rename(
            config,
            CONFIG.format(
                **{**values, "domain": "lab2", "level": "debug", "metrics": "127.0.0.1:9"}
            ),
        )
        text = wait_for_line(hosts, "10.240.0.101 worker-0.lab2 worker-0")
        assert "worker-1.lab " not in text
        reloaded = wait_for_event(daemon, "config_reloaded", trigger="file")[-1]
        assert reloaded["changed"] == ["records.domain", "log.level"]
        assert events(daemon, "config_needs_restart", keys=["metrics.listen"])
        wait_until(
            lambda: [e for e in daemon.log_events() if e.get("level") == "debug"],
            timeout=10,
            what="debug lines after log.level = debug",
        )

        # A new label selector needs a new LIST: only the workers remain.
        replace_by_rename(
            config, CONFIG.format(**{**values, "domain": "lab2", "selector": "role=worker"})
        )
        text = wait_for_line(hosts, "10.240.0.10 controller-0.lab2 controller-0", present=False)
        assert "10.240.0.101 worker-0.lab2 worker-0" in text.splitlines()
        assert events(daemon, "node_source_replaced", label_selector="role=worker")
        assert daemon.stop()[0] == 0


def changes_flow_with_the_old_token_revoked(
    api: FakeApiServer, daemon: DaemonProcess, hosts: Path, new_token: str, *, what: str
) -> None:
    """Once the daemon watches with `new_token`, TOKEN is revoked and the watches dropped: a new
    node still reaches the hosts file, and the daemon never hits a 401."""
    wait_until(
        lambda: [r for r in api.requests if r.token == new_token and r.verb == "watch"],
        timeout=15,
        what=what,
    )
    api.revoke(TOKEN)
    api.drop_watches()
    api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
    wait_for_line(hosts, "10.240.0.150 worker-1.node.internal worker-1")
    assert not events(daemon, "api_error", reason="unauthorized")


def test_a_rewritten_kubeconfig_with_a_new_token_is_picked_up_without_restart(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """The client is rebuilt when the kubeconfig changes; with the old token revoked, changes
    flow again through the new one, never hitting a 401, in the same process."""
    hosts = tmp_path / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        pid = daemon.process.pid

        api.authorize("rotated-token")
        api.write_kubeconfig(tmp_path / "kubeconfig", token="rotated-token")
        wait_for_event(daemon, "credentials_reloaded", trigger="file")
        changes_flow_with_the_old_token_revoked(
            api, daemon, hosts, "rotated-token", what="a watch with the new token"
        )
        assert daemon.process.pid == pid and daemon.process.poll() is None
        assert daemon.stop()[0] == 0


def test_a_rotated_token_file_named_by_the_kubeconfig_is_picked_up(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Credentials in a file the kubeconfig points at (tokenFile) are watched too."""
    hosts = tmp_path / "nodes.hosts"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    kubeconfig = tmp_path / "kubeconfig-with-token-file"
    document = json.loads(api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN).read_text())
    document["users"][0]["user"] = {"tokenFile": str(token_file)}
    kubeconfig.write_text(json.dumps(document))
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), kubeconfig=kubeconfig) as daemon:
        wait_for_line(hosts, WORKER_0)
        api.authorize("second-token")
        replace_by_rename(token_file, "second-token")
        reloaded = wait_for_event(daemon, "credentials_reloaded", trigger="file")[-1]
        assert reloaded["files"] == [str(token_file)]
        changes_flow_with_the_old_token_revoked(
            api, daemon, hosts, "second-token", what="a watch with the token from the rotated file"
        )
        assert daemon.stop()[0] == 0


def test_a_broken_kubeconfig_is_rejected_and_the_running_client_stays(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """A kubeconfig that does not load is not used; the watch goes on with the old client."""
    hosts = tmp_path / "nodes.hosts"
    with start_daemon(api, tmp_path, "--hosts-file", str(hosts), token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        replace_by_rename(tmp_path / "kubeconfig", "this: [is not a kubeconfig\n")
        wait_for_event(daemon, "credentials_rejected")
        api.add_object("nodes", lab_node("worker-1", "10.240.0.150"))
        wait_for_line(hosts, "10.240.0.150 worker-1.node.internal worker-1")
        assert not daemon.events_named("credentials_reloaded")
        assert daemon.stop()[0] == 0


# --- which settings a reload applies (pure, in-process)


def test_a_reload_applies_live_keys_and_keeps_the_ones_bound_at_start() -> None:
    """Record policy, static hosts, kubeconfig, selector and logging change live; listeners,
    sockets and owned paths keep their running values until a restart."""
    from nodehosts.app.reloader import plan_settings_change
    from nodehosts.config import build_settings

    old = build_settings({}, {"hosts_file": "/a/nodes.hosts", "control_socket": "/run/a.sock"})
    new = build_settings(
        {},
        {
            "hosts_file": "/b/nodes.hosts",
            "control_socket": "/run/a.sock",
            "domain": "lab",
            "label_selector": "role=worker",
            "log_level": "debug",
            "metrics_listen": "127.0.0.1:9100",
        },
    )
    applied, live, restart = plan_settings_change(old, new)
    assert live == ["label_selector", "domain", "log_level"]
    assert restart == ["hosts_file", "metrics_listen"]
    assert (applied.domain, applied.label_selector, applied.log_level) == (
        "lab",
        "role=worker",
        "debug",
    )
    assert str(applied.hosts_file) == "/a/nodes.hosts"
    assert applied.metrics_listen is None


def test_with_dns_on_the_domain_needs_a_restart() -> None:
    """The DNS zone is built from the domain at start: changing it live would split the two."""
    from nodehosts.app.reloader import plan_settings_change
    from nodehosts.config import build_settings

    old = build_settings({}, {"dns_listen": ["127.0.0.1:5353"]})
    new = build_settings({}, {"dns_listen": ["127.0.0.1:5353"], "domain": "lab"})
    applied, live, restart = plan_settings_change(old, new)
    assert (live, restart, applied.domain) == ([], ["domain"], "node.internal")


def test_in_cluster_credentials_watch_the_ca_not_the_rotating_token() -> None:
    """The client re-reads a rotated service account token itself; a new CA needs a rebuild."""
    from nodehosts.app.reloader import credential_files
    from nodehosts.config import Settings

    files = credential_files(Settings(), {"KUBERNETES_SERVICE_HOST": "10.32.0.1"})
    assert sorted(p.name for p in files) == ["ca.crt"]


def test_a_config_that_is_not_utf8_is_rejected_on_sighup_and_later_reloads_work(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Issue 12: the reload task died on UnicodeDecodeError and nothing reloaded after it.
    Now the edit is rejected like any broken file, and the next good edit applies."""
    hosts = tmp_path / "nodes.hosts"
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    config = tmp_path / "config.toml"
    values = {
        "kubeconfig": kubeconfig,
        "selector": "",
        "domain": "lab",
        "hosts": hosts,
        "metrics": "",
        "level": "info",
    }
    config.write_text(CONFIG.format(**values))
    with DaemonProcess(["--config", str(config)], workdir=tmp_path) as daemon:
        wait_for_line(hosts, "10.240.0.101 worker-0.lab worker-0")
        config.write_bytes(CONFIG.format(**values).encode() + b"# caf\xe9\n")
        daemon.process.send_signal(signal.SIGHUP)
        rejected = wait_for_event(daemon, "config_rejected", trigger="SIGHUP")[-1]
        assert rejected["key"] == "file"
        assert "not UTF-8" in str(rejected["error"])
        wait_for_event(daemon, "reload_finished", trigger="SIGHUP")

        config.write_text(CONFIG.format(**{**values, "domain": "lab2"}))
        daemon.process.send_signal(signal.SIGHUP)
        wait_for_line(hosts, "10.240.0.101 worker-0.lab2 worker-0")
        assert daemon.process.poll() is None
        assert daemon.stop()[0] == 0


def test_the_watch_line_cap_is_the_configured_one(api: FakeApiServer, tmp_path: Path) -> None:
    """--max-line-bytes reaches the Node source: an event over it is an api_error with a
    relist, and the Nodes published stay."""
    hosts = tmp_path / "nodes.hosts"
    args = ("--hosts-file", str(hosts), "--max-line-bytes", "65536")
    with start_daemon(api, tmp_path, *args, token=TOKEN) as daemon:
        wait_for_line(hosts, WORKER_0)
        api.add_object(
            "nodes", lab_node("worker-9", "10.240.0.109", labels={"padding": "x" * 100_000})
        )
        error = wait_for_event(daemon, "api_error", reason="response_too_large")[-1]
        assert "kubernetes.max_line_bytes" in str(error["message"])
        assert WORKER_0 in hosts.read_text()
        assert daemon.stop()[0] == 0
