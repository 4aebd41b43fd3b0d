"""The state file across daemon restarts, with the API down: records are served from the saved
file before the API answers, replaced by the first sync, saved again, and the next restart
serves what the previous daemon saved. The first file is written by hand in the documented
format (nodehosts/adapters/state.py), so the reader is not only checked against its own writer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehosts.testing.fake_apiserver import FakeApiServer
from tests.helpers.cluster import fake_api, lab_node
from tests.helpers.daemon import start_dns_daemon
from tests.helpers.dig import DigError, dig
from tests.helpers.files import read_text_or_empty
from tests.helpers.polling import wait_until

TOKEN = "state-token"
DOMAIN = "node.internal"

HAND_WRITTEN = {
    "format": "nodehosts-state",
    "version": 1,
    "saved_at": 1700000000.0,
    "generation": 7,
    "resource_version": "100",
    "hosts": [
        {
            "names": ["old-node.node.internal", "old-node"],
            "addresses": ["10.240.0.99"],
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


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with fake_api(
        TOKEN, lab_node("worker-0", "10.240.0.101"), lab_node("worker-5", "10.240.0.105")
    ) as server:
        yield server


def answer(port: int, name: str) -> list[str] | None:
    try:
        return dig("127.0.0.1", port, f"{name}.{DOMAIN}", "A")
    except DigError:
        return None


def wait_answer(port: int, name: str, expected: list[str]) -> None:
    wait_until(
        lambda: answer(port, name),
        until=lambda got: got == expected,
        timeout=30,
        what=f"{name} to answer {expected}",
    )


def saved_names(state: Path) -> list[str]:
    text = read_text_or_empty(state / "records.json")
    return [h["names"][1] for h in json.loads(text)["hosts"]] if text else []


def test_saved_records_are_served_across_restarts_before_the_api_answers(
    api: FakeApiServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "records.json").write_text(json.dumps(HAND_WRITTEN, indent=1))
    args = ("--state-dir", str(state))

    # 1. API down: the hand-written file is served, marked as saved records.
    api.outage()
    daemon, port = start_dns_daemon(api, tmp_path / "first", *args, token=TOKEN)
    with daemon:
        wait_answer(port, "old-node", ["10.240.0.99"])
        wait_answer(port, "worker-0", ["10.240.0.101"])
        assert answer(port, "worker-5") == []
        (served,) = daemon.events_named("serving_saved_records")
        assert (served["hosts"], served["saved_at"]) == (2, "2023-11-14T22:13:20Z")

        # 2. The API answers: its records replace the saved ones, and are saved in turn.
        api.restore()
        wait_answer(port, "worker-5", ["10.240.0.105"])
        wait_answer(port, "old-node", [])
        wait_until(
            lambda: saved_names(state),
            until=lambda names: names == ["worker-0", "worker-5"],
            timeout=30,
            what="the new records saved",
        )
        assert daemon.stop(timeout=30)[0] == 0

    # 3. Restart with the API down again: what the previous daemon saved is served.
    api.outage()
    daemon, port = start_dns_daemon(api, tmp_path / "second", *args, token=TOKEN)
    with daemon:
        wait_answer(port, "worker-5", ["10.240.0.105"])
        assert answer(port, "old-node") == []
        assert daemon.events_named("serving_saved_records")
        assert daemon.stop(timeout=30)[0] == 0
