"""The approver when the API refuses the approval PUT (401, 403, 404, 409): each is logged with
the reason, retried with a backoff (404: the CSR is gone, nothing to retry) and never stops
the approver. Real client over real HTTP; the fake API server injects the answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from nodehosts.adapters.csr_approver import CsrApprover
from nodehosts.adapters.kube.config import load_client_configuration
from nodehosts.adapters.kube.nodes import NodeSource
from nodehosts.adapters.metrics import Metrics
from nodehosts.core.csr import CsrPolicy
from nodehosts.testing import fake_csr
from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.adapters.test_csr_approver import FAST, Wiring, approved, eventually, worker_1
from tests.helpers.cluster import lab_node

# Long enough that the retries cannot be a busy loop, short enough for a quick test.
RETRY_BASE = 0.2


@pytest.fixture
def api(api_server: FakeApiServer) -> FakeApiServer:
    fake_csr.install(api_server)
    api_server.add_object("nodes", lab_node("worker-1", "10.240.0.101"))
    return api_server


@pytest.fixture
def metrics() -> Metrics:
    """The daemon's real metrics registry, fed by the approver."""
    return Metrics()


@pytest.fixture
async def approver(
    api: FakeApiServer, kubeconfig: Path, metrics: Metrics
) -> AsyncIterator[CsrApprover]:
    """A running approver fed by a running Node source, both against `api`."""

    def configure() -> Any:  # the client's Configuration (untyped)
        return load_client_configuration(kubeconfig)

    approver = CsrApprover(
        configure,
        policy=CsrPolicy(),
        tuning=FAST,
        retry_base=RETRY_BASE,
        retry_cap=1.0,
        metrics=metrics,
    )
    nodes = NodeSource(configure, Wiring(approver), tuning=FAST)
    tasks = [asyncio.create_task(approver.run()), asyncio.create_task(nodes.run())]
    yield approver
    crashed = [task for task in tasks if task.done()]
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not crashed, "the approver or the Node source stopped"


def failures_metric(metrics: Metrics) -> dict[str, float]:
    """nodehosts_csr_approval_failures_total by reason, as /metrics exposes it."""
    return {
        sample.labels["reason"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "nodehosts_csr_approval_failures"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def approval_puts(api: FakeApiServer) -> int:
    return len([r for r in api.requests if r.verb == "update"])


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_approval_is_logged_counted_and_retried_with_backoff(
    api: FakeApiServer, approver: CsrApprover, metrics: Metrics, status: int
) -> None:
    """Three refusals (expired token, RBAC not applied yet): each logged with status and reason,
    counted, retried after a growing delay; approved once the API accepts."""
    api.fail_next(3, status=status, verbs=["update"])
    with structlog.testing.capture_logs() as logs:
        api.add_object(fake_csr.CSRS.plural, worker_1("csr-refused"))
        await eventually(
            lambda: approved(api, "csr-refused"), what="approval after the refusals", timeout=30
        )
    failures = [e for e in logs if e["event"] == "csr_approval_failed"]
    assert [(e["csr"], e["status"]) for e in failures] == [("csr-refused", status)] * 3
    assert all(e["reason"] and e["message"] for e in failures), failures
    assert all(e["retry_in"] >= RETRY_BASE / 2 for e in failures), "retried without a delay"
    assert approver.approval_failures_total == 3
    assert failures_metric(metrics) == {failures[0]["reason"]: 3.0}
    assert approval_puts(api) == 4
    # The API shows the approval a moment before the approver has read the PUT's answer.
    await eventually(lambda: approver.report()["retrying"] == [], what="no retry left", timeout=30)


async def test_a_conflict_is_retried_against_the_new_version(
    api: FakeApiServer, approver: CsrApprover
) -> None:
    """409 (the CSR changed since it was judged): logged as a conflict, retried, approved."""
    api.fail_next(1, status=409, verbs=["update"])
    with structlog.testing.capture_logs() as logs:
        api.add_object(fake_csr.CSRS.plural, worker_1("csr-conflict"))
        await eventually(lambda: approved(api, "csr-conflict"), what="approval", timeout=30)
    (conflict,) = [e for e in logs if e["event"] == "csr_approval_conflict"]
    assert conflict["csr"] == "csr-conflict"
    assert conflict["retry_in"] >= RETRY_BASE / 2
    assert approval_puts(api) == 2


async def test_a_csr_gone_before_its_approval_is_dropped_and_the_approver_goes_on(
    api: FakeApiServer, approver: CsrApprover, metrics: Metrics
) -> None:
    """404 on the PUT (deleted meanwhile): one log line, no retry loop; the next CSR is approved."""
    api.fail_next(1, status=404, verbs=["update"])
    with structlog.testing.capture_logs() as logs:
        api.add_object(fake_csr.CSRS.plural, worker_1("csr-gone"))
        await eventually(
            lambda: [e for e in logs if e["event"] == "csr_gone_before_approval"],
            what="csr_gone_before_approval",
            timeout=30,
        )
        api.delete_object(fake_csr.CSRS.plural, "csr-gone")
        api.add_object(fake_csr.CSRS.plural, worker_1("csr-next"))
        await eventually(lambda: approved(api, "csr-next"), what="the next CSR", timeout=30)
    assert [e["csr"] for e in logs if e["event"] == "csr_gone_before_approval"] == ["csr-gone"]
    assert approver.approval_failures_total == 0
    assert failures_metric(metrics) == {}
    assert approver.report()["retrying"] == []
