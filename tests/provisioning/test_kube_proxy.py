"""addon_kube_proxy's KUBE_PROXY_CONNTRACK_MAX_PER_CORE (cluster.env): what kube-proxy reads.

That kube-proxy runs with it (in node containers, where nf_conntrack_max cannot be written)
is the lab's test (tests/lab, marker lab); here, the KubeProxyConfiguration it gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import bash_lib

pytestmark = pytest.mark.provisioning


def kube_proxy_config(tmp_path: Path, **env: str) -> dict[str, Any]:
    out = tmp_path / "10-kube-proxy.yaml"
    result = bash_lib(f'addon_kube_proxy "{out}" "{tmp_path}"', **env)
    assert result.returncode == 0, result.stderr
    (config_map,) = [d for d in yaml.safe_load_all(out.read_text()) if d["kind"] == "ConfigMap"]
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.conf"])
    assert config["kind"] == "KubeProxyConfiguration"
    return config


def test_by_default_kube_proxy_sets_conntrack_as_it_does_on_a_vm(tmp_path: Path) -> None:
    assert "conntrack" not in kube_proxy_config(tmp_path)


def test_zero_leaves_the_kernel_limit_alone(tmp_path: Path) -> None:
    config = kube_proxy_config(tmp_path, KUBE_PROXY_CONNTRACK_MAX_PER_CORE="0")
    assert config["conntrack"] == {"maxPerCore": 0}
    assert config["mode"] == "iptables"


def test_a_value_that_is_not_a_number_stops_with_its_name(tmp_path: Path) -> None:
    out = tmp_path / "10-kube-proxy.yaml"
    result = bash_lib(
        f'addon_kube_proxy "{out}" "{tmp_path}"', KUBE_PROXY_CONNTRACK_MAX_PER_CORE="0x"
    )
    assert result.returncode != 0
    assert "KUBE_PROXY_CONNTRACK_MAX_PER_CORE must be a number or empty, not '0x'" in result.stderr
    assert not out.exists()
