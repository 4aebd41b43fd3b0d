"""The observability kit under deploy/: Prometheus rules and scrape config that promtool
accepts, alerts that fire on the series they are about (`promtool test rules`), and a Grafana
dashboard and rules that use only metrics a running daemon exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodehosts.core.nodes import node_from_json
from nodehosts.core.records import RecordPolicy, build_publication
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import nodehosts_dump, start_listening_daemon
from tests.helpers.dig import dig
from tests.helpers.polling import wait_until
from tests.helpers.service import http_get

TOP = Path(__file__).resolve().parent.parent.parent
RULES = TOP / "deploy" / "prometheus" / "nodehosts-rules.yml"
SCRAPE = TOP / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = TOP / "deploy" / "grafana" / "nodehosts-dashboard.json"
RULES_TEST = Path(__file__).resolve().parent / "promtool" / "nodehosts-rules.test.yml"
TOKEN = "observability-token"
# Suffixes a family's samples carry, by type (the OpenMetrics/Prometheus text formats), less
# `_created`, which the daemon does not export.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        message = "needs promtool: apt-get install prometheus (scripts/system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=TOP
    )


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` on the shipped alert rules."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_accepts_the_scrape_example() -> None:
    """The example prometheus.yml (scrape job and rule_files) is valid."""
    result = promtool("check", "config", str(SCRAPE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_their_series_and_not_on_a_healthy_daemon() -> None:
    """`promtool test rules`: each alert after its `for`, with its labels and text."""
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def referenced_metrics() -> dict[str, set[str]]:
    """Metric names used by the rules' and the dashboard's queries, by file."""
    out: dict[str, set[str]] = {}
    import yaml

    exprs = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]  # fmt: skip
    out[RULES.name] = {name for e in exprs for name in re.findall(r"\bnodehosts_\w+", e)}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if "query" in v
                and isinstance(v["query"], dict)]  # fmt: skip
    out[DASHBOARD.name] = {name for q in queries for name in re.findall(r"\bnodehosts_\w+", q)}
    return out


def exported_metrics(text: str) -> set[str]:
    """Every sample name the exposition `text` declares, with or without samples yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_rules_and_dashboard_use_only_metrics_the_daemon_exports(tmp_path: Path) -> None:
    """Scrape a running daemon (hosts file, DNS) and find every metric the kit names."""
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101")) as api:
        assert isinstance(api, FakeApiServer)
        d, ports = start_listening_daemon(
            api, tmp_path, "--hosts-file", str(tmp_path / "nodes.hosts"),
            dns="127.0.0.1", metrics="127.0.0.1", token=TOKEN,
        )  # fmt: skip
        port, dns_port = ports.metrics, ports.dns
        with d:
            wait_until(lambda: d.events_named("ready"), timeout=15, what="ready")
            assert dig("127.0.0.1", dns_port, "worker-0", "A") == ["10.240.0.101"]
            status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert "_created" not in text  # the daemon leaves those series out
    exported = exported_metrics(text)
    for source, names in referenced_metrics().items():
        assert names, f"{source} references no nodehosts metric"
        missing = sorted(names - exported)
        assert not missing, f"{source} uses metrics the daemon does not export: {missing}"


def gauges(text: str) -> dict[str, float]:
    """The node, skip, host, address and collision gauges of a scrape, keyed by sample name
    and sorted labels."""
    wanted = (
        "nodehosts_nodes_seen",
        "nodehosts_nodes_published",
        "nodehosts_nodes_skipped",
        "nodehosts_records_hosts",
        "nodehosts_records_addresses",
        "nodehosts_records_collisions",
    )
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def full_count(report: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The gauges as counted from the whole dump (`report`), with the skip reasons from a full
    build of the Nodes in the API (the dump shows the reason's text, not its label)."""
    families = {"ipv4": 0, "ipv6": 0}
    for host in report["hosts"]:
        for address in host["addresses"]:
            families["ipv6" if ":" in address else "ipv4"] += 1
    full = build_publication([node_from_json(n) for n in nodes.values()], [], RecordPolicy())
    skipped: dict[str, int] = {}
    for decision in full.decisions:
        if decision.skip is not None:
            skipped[str(decision.skip)] = skipped.get(str(decision.skip), 0) + 1
    assert sum(skipped.values()) == sum(1 for n in report["nodes"] if not n["published"])
    out = {
        "nodehosts_nodes_seen{}": len(report["nodes"]),
        "nodehosts_nodes_published{}": sum(1 for n in report["nodes"] if n["published"]),
        "nodehosts_records_hosts{}": len(report["hosts"]),
        "nodehosts_records_collisions{}": len(report["collisions"]),
    }
    out |= {f"nodehosts_records_addresses{{family={f}}}": n for f, n in families.items()}
    out |= {f"nodehosts_nodes_skipped{{reason={r}}}": n for r, n in skipped.items()}
    return {name: float(value) for name, value in out.items()}


def test_published_counts_follow_every_kind_of_change(tmp_path: Path) -> None:
    """/metrics' node, skip, host, address and collision gauges equal a full count of what
    `nodehosts dump` shows after each change: a node added, moved, colliding (its Hostname is
    another node's name), skipped (no address), removed, and a skipped one healed."""
    nodes = {
        "worker-0": lab_node("worker-0", "10.240.0.101"),
        "worker-1": make_node(
            "worker-1", addresses=[("InternalIP", "10.240.0.102"), ("InternalIP", "fd00::102")]
        ),
    }
    socket_path = tmp_path / "control.sock"
    with fake_api(TOKEN, *nodes.values()) as api:
        assert isinstance(api, FakeApiServer)
        d, ports = start_listening_daemon(
            api, tmp_path, "--control-socket", str(socket_path),
            "--hosts-file", str(tmp_path / "nodes.hosts"), metrics="127.0.0.1", token=TOKEN,
        )  # fmt: skip
        url = f"http://127.0.0.1:{ports.metrics}/metrics"

        def dump() -> dict[str, Any]:
            result = nodehosts_dump(
                "--from", "daemon", "-o", "json", "--control-socket", str(socket_path)
            )
            assert result.returncode == 0, result.stderr
            report: dict[str, Any] = json.loads(result.stdout)
            return report

        def agree(expect: Callable[[dict[str, Any]], bool], what: str) -> None:
            """Wait until the dump shows the change (`expect`), then compare the gauges."""
            report = wait_until(dump, until=expect, timeout=20, interval=0.1, what=what)
            status, text = http_get(url)
            assert status == 200
            assert gauges(text) == full_count(report, nodes), what

        def addresses(report: dict[str, Any]) -> dict[str, list[str]]:
            return {n["name"]: n["addresses"] for n in report["nodes"]}

        with d:
            wait_until(lambda: d.events_named("ready"), timeout=15, what="ready")
            agree(lambda r: len(r["nodes"]) == 2, "the first list")

            nodes["worker-2"] = lab_node("worker-2", "10.240.0.103")
            api.add_object("nodes", nodes["worker-2"])
            agree(lambda r: "worker-2" in addresses(r), "worker-2 added")

            nodes["worker-0"] = lab_node("worker-0", "10.240.0.111")
            api.modify_object("nodes", nodes["worker-0"])
            agree(lambda r: addresses(r)["worker-0"] == ["10.240.0.111"], "worker-0 moved")

            nodes["worker-3"] = make_node(
                "worker-3", addresses=[("InternalIP", "10.240.0.104")], hostname="worker-1"
            )
            api.add_object("nodes", nodes["worker-3"])
            agree(lambda r: len(r["collisions"]) == 2, "worker-3's Hostname collides")

            nodes["worker-4"] = make_node("worker-4", addresses=[])
            api.add_object("nodes", nodes["worker-4"])
            agree(lambda r: "worker-4" in addresses(r), "worker-4 skipped: no address")

            del nodes["worker-2"]
            api.delete_object("nodes", "worker-2")
            agree(lambda r: "worker-2" not in addresses(r), "worker-2 removed")

            nodes["worker-4"] = make_node("worker-4", addresses=["fd00::105"])
            api.modify_object("nodes", nodes["worker-4"])
            agree(lambda r: addresses(r)["worker-4"] == ["fd00::105"], "worker-4 healed")


def test_saved_records_served_at_start_are_counted_until_the_first_sync(tmp_path: Path) -> None:
    """With the API down at start the saved records are served: the host and address gauges
    count them (no Node seen yet, stale); the first sync replaces them with the live counts."""
    state = tmp_path / "state"
    state.mkdir()
    saved = {
        "format": "nodehosts-state",
        "version": 1,
        "saved_at": 1700000000.0,
        "generation": 7,
        "resource_version": "100",
        "hosts": [
            {
                "names": ["old-node.node.internal", "old-node"],
                "addresses": ["10.240.0.99", "fd00::99"],
                "origin": "node",
                "node": "old-node",
            },
            {
                "names": ["worker-0.node.internal", "worker-0"],
                "addresses": ["10.240.0.101"],
                "origin": "node",
                "node": "worker-0",
            },
        ],
    }
    (state / "records.json").write_text(json.dumps(saved))
    with fake_api(TOKEN, lab_node("worker-0", "10.240.0.101")) as api:
        api.outage()
        d, ports = start_listening_daemon(
            api, tmp_path, "--state-dir", str(state),
            dns="127.0.0.1", metrics="127.0.0.1", token=TOKEN,
        )  # fmt: skip
        url = f"http://127.0.0.1:{ports.metrics}/metrics"

        def scrape() -> dict[str, float]:
            status, text = http_get(url)
            assert status == 200
            return gauges(text) | {
                s.name: s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "nodehosts_records_stale"
            }

        with d:
            stale = wait_until(
                scrape,
                until=lambda g: g.get("nodehosts_records_stale") == 1,
                timeout=20,
                what="the saved records served",
            )
            assert stale == {
                "nodehosts_records_stale": 1.0,
                "nodehosts_nodes_seen{}": 0.0,
                "nodehosts_nodes_published{}": 0.0,
                "nodehosts_records_hosts{}": 2.0,
                "nodehosts_records_addresses{family=ipv4}": 2.0,
                "nodehosts_records_addresses{family=ipv6}": 1.0,
                "nodehosts_records_collisions{}": 0.0,
            }
            api.restore()
            live = wait_until(
                scrape,
                until=lambda g: g.get("nodehosts_records_stale") == 0,
                timeout=30,
                what="the first sync",
            )
            assert live == {
                "nodehosts_records_stale": 0.0,
                "nodehosts_nodes_seen{}": 1.0,
                "nodehosts_nodes_published{}": 1.0,
                "nodehosts_records_hosts{}": 1.0,
                "nodehosts_records_addresses{family=ipv4}": 1.0,
                "nodehosts_records_addresses{family=ipv6}": 0.0,
                "nodehosts_records_collisions{}": 0.0,
            }
