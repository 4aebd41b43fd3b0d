"""The daemon's metrics interface: the null stand-in and the real registry agree on every call,
and a misspelt call fails instead of being swallowed (it used to be a __getattr__ no-op)."""

from __future__ import annotations

import inspect

import pytest

from nodehosts.adapters.metrics import Metrics
from nodehosts.app.telemetry import DaemonMetrics, NoMetrics


def _calls(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_no_metrics_and_metrics_take_every_call_the_daemon_makes_alike() -> None:
    protocol = _calls(DaemonMetrics)
    assert protocol, "the protocol lists the calls"
    assert _calls(NoMetrics) == protocol
    real = _calls(Metrics)
    assert {name: real.get(name) for name in protocol} == protocol


def test_a_misspelt_call_fails() -> None:
    with pytest.raises(AttributeError):
        NoMetrics().set_redy(True)  # type: ignore[attr-defined]  # the point: no such method
