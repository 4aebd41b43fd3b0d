"""Fixtures shared by the end-to-end tests: failure reports carry the container's diagnostics."""

from __future__ import annotations

import pytest

_REPORTED: set[tuple[int, str, str]] = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        container = getattr(value, "container", value)
        if hasattr(container, "diagnostics"):
            # A failed module fixture fails every later test the same way: report it once.
            key = (id(container), report.when, str(call.excinfo.value) if call.excinfo else "")
            if key not in _REPORTED:
                _REPORTED.add(key)
                report.sections.append(("container diagnostics", container.diagnostics()))
            break
