"""The control plane fixture itself: a flag the pinned binaries do not know fails the start
with that component's own log lines, and leaves no process behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.controlplane import ControlPlane

pytestmark = pytest.mark.real_cluster


def test_an_unknown_flag_fails_with_the_component_log(rendered_lab: Path, tmp_path: Path) -> None:
    plane = ControlPlane(rendered_lab, tmp_path)
    plane.commands["kube-apiserver"].append("--no-such-flag=1")  # as a misspelt manifest would
    with pytest.raises(RuntimeError) as failed:
        plane.start()
    message = str(failed.value)
    assert message.startswith("kube-apiserver exited")
    assert "--- kube-apiserver (last 50 lines" in message
    assert "unknown flag: --no-such-flag" in message
    assert all(process.poll() is not None for process in plane.processes.values())
