"""Reading the static hosts file: bounded in size and in what it logs (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nodehosts.app.publisher import MAX_STATIC_HOSTS_BYTES, StaticHostsError, read_static_hosts
from nodehosts.core.hosts import MAX_PROBLEMS_KEPT


def test_a_file_of_bad_lines_is_one_log_line_with_a_count(tmp_path: Path) -> None:
    """Issue 12: one warning per bad line made 350 MB of log; now one line says how many and
    shows the first few."""
    path = tmp_path / "static"
    path.write_text("10.240.0.40 lb-0\n" + "not-an-address x\n" * 20_000)
    with capture_logs() as logs:
        hosts = read_static_hosts(path)
    assert [host.names for host in hosts] == [("lb-0",)]
    assert [entry["event"] for entry in logs] == ["static_hosts_lines_skipped"]
    assert logs[0]["problems"] == 20_000
    assert len(logs[0]["first"]) == MAX_PROBLEMS_KEPT
    assert logs[0]["first"][0].startswith("line 2: bad address 'not-an-address'")


def test_a_file_over_the_size_cap_is_rejected_whole(tmp_path: Path) -> None:
    """Issue 12: 20 MB of lines took the daemon's memory and its loop; now it is refused
    without being parsed, and the caller keeps its last good static hosts."""
    path = tmp_path / "static"
    line = b"10.0.0.1 host\n"
    path.write_bytes(line * (MAX_STATIC_HOSTS_BYTES // len(line) + 1))
    with pytest.raises(StaticHostsError, match="larger than"):
        read_static_hosts(path)


def test_a_file_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "static"
    path.write_bytes(b"10.0.0.1 caf\xe9\n")
    with pytest.raises(StaticHostsError, match="not UTF-8"):
        read_static_hosts(path)
