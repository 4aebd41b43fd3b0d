"""`--label-selector`: the Nodes outside the selection still hold their names (issue 12).

Whoever registers a selected Node could otherwise report another, unselected Node's name as
its `Hostname` and have DNS answer that name with its own address. The real CLI process, the
real kubernetes client against the fake API server, real dig against the daemon's DNS server
on loopback, the hosts file it writes, and a config file reload.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers import dig
from tests.helpers.cluster import fake_api
from tests.helpers.daemon import nodehosts, start_dns_daemon
from tests.helpers.polling import wait_until

TOKEN = "hidden-token"
LOCAL = "127.0.0.1"
CONTROLLER = make_node("controller-0", addresses=["10.240.0.10"], labels={"role": "controller"})
# Selected; its kubelet reports the unselected controller's name as its Hostname.
WORKER = make_node(
    "worker-1", addresses=["10.240.0.101"], hostname="controller-0", labels={"role": "worker"}
)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(TOKEN, CONTROLLER, WORKER) as server:
        yield server


def write_config(tmp_path: Path, selector: str | None) -> Path:
    """The config file: only the selector (the rest are flags, which a reload keeps)."""
    config = tmp_path / "config.toml"
    selector_line = f'label_selector = "{selector}"\n' if selector else ""
    temporary = config.with_suffix(".tmp")
    temporary.write_text(f"[kubernetes]\n{selector_line}")
    os.replace(temporary, config)
    return config


def daemon_flags(tmp_path: Path, selector: str | None) -> tuple[str, ...]:
    """For start_dns_daemon: the config file, the hosts file and the control socket."""
    (tmp_path / "hosts").mkdir()
    config = write_config(tmp_path, selector)
    hosts = tmp_path / "hosts" / "nodes.hosts"
    socket = tmp_path / "control.sock"
    return ("--config", str(config), "--hosts-file", str(hosts), "--control-socket", str(socket))


def answer(port: int, name: str) -> list[str] | None:
    try:
        return dig.dig(LOCAL, port, name)
    except dig.DigError:
        return None  # not listening yet


def dump(socket: Path) -> dict[str, Any]:
    result = nodehosts(
        "dump", "--from", "daemon", "--control-socket", str(socket), "--format", "json", timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_an_unselected_nodes_name_is_never_a_selected_nodes_alias(
    api: FakeApiServer, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts" / "nodes.hosts"
    flags = daemon_flags(tmp_path, "role=worker")
    daemon, port = start_dns_daemon(api, tmp_path, *flags, token=TOKEN)
    with daemon:
        try:
            wait_until(
                lambda: answer(port, "worker-1"),
                until=lambda got: got == ["10.240.0.101"],
                timeout=30,
                what="worker-1 answered",
            )
            # controller-0 is outside the selection, not gone: its name is not worker-1's.
            assert answer(port, "controller-0") == []
            assert answer(port, "controller-0.node.internal") == []
            text = hosts.read_text()
            assert "10.240.0.101 worker-1.node.internal worker-1\n" in text
            assert "controller-0" not in text
            report = dump(tmp_path / "control.sock")
            assert report["cluster_view"] == {"listed": True, "last_error": None}
            worker = {entry["name"]: entry for entry in report["nodes"]}["worker-1"]
            assert worker["published"]
            assert "controller-0" not in worker["names"]
            assert "'controller-0' (outside the label selector)" in worker["reason"]

            # controller-0 goes (as it would to be re-registered under another name): the
            # alias is nobody else's now.
            api.delete_object("nodes", "controller-0")
            api.add_object(
                "nodes",
                make_node("controller-9", addresses=["10.240.0.19"], labels={"role": "controller"}),
            )
            wait_until(
                lambda: answer(port, "controller-0"),
                until=lambda got: got == ["10.240.0.101"],
                timeout=30,
                what="worker-1's alias controller-0 published",
            )
            assert "10.240.0.101 worker-1.node.internal worker-1 controller-0" in hosts.read_text()
            assert answer(port, "controller-9") == []  # outside the selection: not published

            # It comes back: the alias is released again.
            api.add_object("nodes", CONTROLLER)
            wait_until(
                lambda: answer(port, "controller-0"),
                until=lambda got: got == [],
                timeout=30,
                what="controller-0 held again",
            )

            # A reload that clears the selector publishes every Node; controller-0's own name
            # beats worker-1's alias.
            write_config(tmp_path, None)
            daemon.process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: answer(port, "controller-0"),
                until=lambda got: got == ["10.240.0.10"],
                timeout=30,
                what="controller-0 published after the selector was cleared",
            )
            assert answer(port, "controller-9") == ["10.240.0.19"]
            assert answer(port, "worker-1") == ["10.240.0.101"]
            text = hosts.read_text()
            assert "10.240.0.10 controller-0.node.internal controller-0\n" in text
            assert "10.240.0.101 worker-1.node.internal worker-1\n" in text
            wait_until(
                lambda: "cluster_view" not in dump(tmp_path / "control.sock"),
                timeout=30,
                what="the cluster view stopped",
            )
            assert daemon.process.poll() is None
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- daemon log ---\n{daemon.log_text()}") from None


def test_dump_from_a_list_with_a_selector_matches_the_daemon(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """`dump --from list --label-selector` LISTs every Node too, as the daemon keeps them."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    flags = ("--config", "", "--kubeconfig", str(kubeconfig), "--label-selector", "role=worker")
    result = nodehosts("dump", "--from", "list", *flags, "--format", "json", timeout=30)
    assert result.returncode == 0, result.stderr
    worker = {entry["name"]: entry for entry in json.loads(result.stdout)["nodes"]}["worker-1"]
    assert worker["published"]
    assert "controller-0" not in worker["names"]
    assert "'controller-0' (outside the label selector)" in worker["reason"]
    result = nodehosts("dump", "--from", "list", *flags, "--format", "hosts", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "10.240.0.101 worker-1.node.internal worker-1\n" in result.stdout
    assert "controller-0" not in result.stdout

    # `run --once` writes the same file.
    (tmp_path / "hosts").mkdir()
    hosts = tmp_path / "hosts" / "nodes.hosts"
    result = nodehosts("run", "--once", *flags, "--hosts-file", str(hosts), timeout=30)
    assert result.returncode == 0, result.stderr
    assert "10.240.0.101 worker-1.node.internal worker-1\n" in hosts.read_text()
    assert "controller-0" not in hosts.read_text()


def test_a_reload_that_sets_the_selector_keeps_the_unselected_names_held(
    api: FakeApiServer, tmp_path: Path
) -> None:
    flags = daemon_flags(tmp_path, None)
    daemon, port = start_dns_daemon(api, tmp_path, *flags, token=TOKEN)
    with daemon:
        try:
            wait_until(
                lambda: answer(port, "controller-0"),
                until=lambda got: got == ["10.240.0.10"],
                timeout=30,
                what="controller-0 answered",
            )
            write_config(tmp_path, "role=worker")
            daemon.process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: answer(port, "controller-0"),
                until=lambda got: got == [],
                timeout=30,
                what="controller-0 unpublished (outside the selection now)",
            )
            wait_until(
                lambda: daemon.events_named("node_source_replaced"),
                timeout=30,
                what="the selected source",
            )
            # A later change publishes again from the selected Nodes: the name stays held.
            api.add_object(
                "nodes",
                make_node("worker-2", addresses=["10.240.0.102"], labels={"role": "worker"}),
            )
            wait_until(
                lambda: answer(port, "worker-2"),
                until=lambda got: got == ["10.240.0.102"],
                timeout=30,
                what="worker-2 published",
            )
            assert answer(port, "controller-0") == []
            assert "controller-0" not in (tmp_path / "hosts" / "nodes.hosts").read_text()
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- daemon log ---\n{daemon.log_text()}") from None
