"""The observability kit under deploy/: Prometheus rules and scrape config that promtool
accepts, alerts that fire on the series they are about (`promtool test rules`), and a Grafana
dashboard and rules that use only metrics a running daemon exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import start_listening_daemon
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
