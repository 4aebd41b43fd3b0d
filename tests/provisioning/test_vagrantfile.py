"""provisioning/Vagrantfile: it parses, and it defines the lab's machines as cluster.env says.

Vagrant itself cannot run here; vagrant_stub.rb loads the Vagrantfile with stand-ins for
Vagrant's configuration objects and prints what it configured.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import PROVISIONING, clean_env, require_tool

pytestmark = pytest.mark.provisioning

STUB = Path(__file__).with_name("vagrant_stub.rb")


def vagrant_config(**env: str) -> dict[str, Any]:
    ruby = require_tool("ruby")
    result = subprocess.run(
        [ruby, str(STUB), str(PROVISIONING / "Vagrantfile")],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_vagrantfile_parses_with_ruby_c() -> None:
    """ruby -c: the syntax is valid."""
    ruby = require_tool("ruby")
    result = subprocess.run(
        [ruby, "-c", str(PROVISIONING / "Vagrantfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stdout


def test_default_machines_addresses_and_memory() -> None:
    """lb-0 first at 10.240.0.40, controllers at .10+, workers on DHCP .101-.200."""
    config = vagrant_config()
    assert config["box"] == "debian/trixie64"
    machines = {m["name"]: m for m in config["machines"]}
    assert [m["name"] for m in config["machines"]] == [
        "lb-0",
        "controller-0",
        "controller-1",
        "controller-2",
        "worker-0",
        "worker-1",
        "worker-2",
    ]
    assert machines["lb-0"]["networks"][0]["ip"] == "10.240.0.40"
    assert machines["lb-0"]["provider"]["memory"] == 512
    for i in range(3):
        controller = machines[f"controller-{i}"]
        assert controller["hostname"] == f"controller-{i}"
        assert controller["networks"] == [
            {"kind": "private_network", "ip": f"10.240.0.{10 + i}", "netmask": "255.255.255.0"}
        ]
        assert controller["provider"]["memory"] == 2048
    worker = machines["worker-0"]
    assert worker["provider"]["memory"] == 1024
    (network,) = worker["networks"]
    assert network["type"] == "dhcp"
    assert (network["dhcp_lower"], network["dhcp_upper"]) == ("10.240.0.101", "10.240.0.200")
    assert network["ip"] == "10.240.0.1"  # the same host-only network as the others


def test_counts_memory_box_and_version_follow_the_environment() -> None:
    """WORKER_COUNT, CONTROLLER_COUNT, *_MEMORY, BOX, KUBERNETES_VERSION are overridable."""
    config = vagrant_config(
        WORKER_COUNT="4",
        CONTROLLER_COUNT="1",
        WORKER_MEMORY="1536",
        BOX="debian/bookworm64",
        KUBERNETES_VERSION="v1.36.9",
        LB_COUNT="2",
    )
    names = [m["name"] for m in config["machines"]]
    assert names == ["lb-0", "lb-1", "controller-0", "worker-0", "worker-1", "worker-2", "worker-3"]
    assert config["box"] == "debian/bookworm64"  # Debian 12 is still supported
    machines = {m["name"]: m for m in config["machines"]}
    assert machines["worker-3"]["provider"]["memory"] == 1536
    # Two LBs: each its own address, the VIP is keepalived's.
    assert machines["lb-0"]["networks"][0]["ip"] == "10.240.0.41"
    assert machines["lb-1"]["networks"][0]["ip"] == "10.240.0.42"
    scripts = [
        p for p in machines["worker-0"]["provisioners"] if p["type"] == "shell" and "env" in p
    ]
    assert scripts[0]["env"]["KUBERNETES_VERSION"] == "v1.36.9"
    assert scripts[0]["env"]["WORKER_COUNT"] == "4"


def test_each_machine_gets_its_scripts_and_only_its_own_bundle() -> None:
    """LB: lb.sh, coredns/, the .deb; controllers: node.sh, controller.sh; workers: worker.sh."""
    config = vagrant_config()
    for machine in config["machines"]:
        name = machine["name"]
        shell = [p["name"] for p in machine["provisioners"] if p["type"] == "shell" and "env" in p]
        uploads = {p["source"] for p in machine["provisioners"] if p["type"] == "file"}
        bundles = {s for s in uploads if "/generated/nodes/" in s}
        assert bundles == {str(PROVISIONING / "generated/nodes" / name)}
        assert str(PROVISIONING / "generated/pki") not in uploads
        if name.startswith("lb-"):
            assert shell == ["lb.sh"]
            assert str(PROVISIONING / "generated/nodehosts.deb") in uploads
            assert str(PROVISIONING.parent / "coredns") in uploads
        elif name.startswith("controller-"):
            assert shell == ["node.sh", "controller.sh"]
        else:
            assert shell == ["node.sh", "worker.sh"]
        for p in machine["provisioners"]:
            if p["type"] == "shell" and "env" in p:
                assert p["env"]["LAB_NODE"] == name


@pytest.mark.parametrize(
    ("env", "last"),
    [
        ({}, "worker-2"),
        ({"WORKER_COUNT": "1"}, "worker-0"),
        ({"WORKER_COUNT": "0"}, "controller-2"),
    ],
)
def test_the_last_machine_up_runs_the_smoke_test_on_the_host(
    env: dict[str, str], last: str
) -> None:
    """After `up` or `provision` of the last machine, scripts/smoke.sh runs on the host (it
    reaches the machines with `vagrant ssh`); no other machine has a trigger."""
    import shlex

    config = vagrant_config(**env)
    triggers = {m["name"]: m["triggers"] for m in config["machines"] if m["triggers"]}
    assert list(triggers) == [last]
    (trigger,) = triggers[last]
    assert trigger["actions"] == ["up", "provision"]
    assert trigger["on_error"] is None  # the default, halt: a failed check fails `vagrant up`
    command = shlex.split(trigger["run"]["inline"])
    assert command == ["bash", str(PROVISIONING / "scripts/smoke.sh")]
    assert Path(command[1]).is_file()
