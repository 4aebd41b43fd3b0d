"""The Node source against watches that end at once or carry an ERROR event other than 410.

A proxy in front of the API (haproxy on the LB) may close every watch stream at once; the
source must then wait between watches instead of spinning. An ERROR event with another code
(500, 403, ...) is an API error: reported, retried with backoff, and the watch resumes from the
version it had, with no relist. Real client over real HTTP against the fake API server.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node
from tests.adapters.test_kube import FAST, Listener, add_nodes, eventually, running, source_for

WINDOW = 2.0  # seconds over which watch requests are counted
DELAY = 0.2  # the source's backoff base: its pause after a watch that ended at once


def requests(api: FakeApiServer, verb: str) -> int:
    return len([r for r in api.requests if r.verb == verb])


async def test_watches_closed_at_once_are_retried_with_a_pause_not_a_busy_loop(
    api_server: FakeApiServer, kubeconfig
) -> None:
    """Every watch ends at once with no event: at most one watch per DELAY over the window,
    no error reported, and changes are followed again once the watches stay open."""
    add_nodes(api_server, 2)
    listener = Listener()
    tuning = replace(FAST, backoff_base=DELAY, backoff_cap=DELAY)
    api_server.end_watches_next(100_000)
    async with running(source_for(kubeconfig, listener, tuning=tuning)):
        await eventually(lambda: listener.of("synced"), what="the first LIST")
        await eventually(lambda: requests(api_server, "watch") >= 2, what="a second watch")
        before = requests(api_server, "watch")
        await asyncio.sleep(WINDOW)
        watches = requests(api_server, "watch") - before
        # A busy loop makes hundreds of requests in the window; the pause allows WINDOW / DELAY.
        assert 1 <= watches <= WINDOW / DELAY + 2, f"{watches} watches in {WINDOW} s"
        assert listener.errors == []
        api_server.clear_faults()
        api_server.add_object("nodes", make_node("worker-9", addresses=["10.240.0.99"]))
        await eventually(lambda: "worker-9" in listener.nodes, what="worker-9", timeout=20)
    assert requests(api_server, "list") == 1, "a clean end resumes the watch, no relist"


@pytest.mark.parametrize("status", [500, 403])
async def test_a_watch_error_event_other_than_410_is_an_api_error_then_the_watch_resumes(
    api_server: FakeApiServer, kubeconfig, status: int
) -> None:
    """ERROR event with code 500 or 403: reported as watch_error, retried, no relist, and the
    records are never dropped; changes made meanwhile arrive."""
    add_nodes(api_server, 2)
    listener = Listener()
    api_server.error_event_next(3, status=status)
    async with running(source_for(kubeconfig, listener)):
        await eventually(lambda: listener.of("synced"), what="the first LIST")
        await eventually(lambda: len(listener.errors) >= 3, what="three watch errors", timeout=20)
        assert set(listener.errors) == {"watch_error"}
        assert sorted(listener.nodes) == ["worker-0", "worker-1"]
        api_server.add_object("nodes", make_node("worker-9", addresses=["10.240.0.99"]))
        await eventually(lambda: "worker-9" in listener.nodes, what="worker-9", timeout=20)
        await eventually(lambda: listener.of("recovered"), what="recovered")
    assert requests(api_server, "list") == 1, "only 410 means relist"
