"""The unit's LimitNOFILE covers every connection nodehosts may hold at once (issue 12)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from nodehosts.adapters.dns_server import DnsService
from nodehosts.adapters.metrics import MetricsServer

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "nodehosts.service"
# Listening sockets (a few DNS addresses, UDP+TCP, metrics, control), API connections (Nodes
# and CSRs, list + watch), inotify, the journal, sd_notify, files being written, the
# interpreter's own: generous.
OTHER_DESCRIPTORS = 128


def test_limit_nofile_covers_dns_tcp_forwards_metrics_and_the_rest() -> None:
    """Before, the process had the default 1024, and 1100 metrics clients exhausted it."""
    unit = UNIT.read_text()
    match = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert match, "the unit sets no LimitNOFILE"
    limit = int(match.group(1))
    defaults = inspect.signature(DnsService.__init__).parameters
    needed = (
        defaults["max_tcp_connections"].default
        + defaults["max_forwards"].default
        + MetricsServer.MAX_CONNECTIONS
        + OTHER_DESCRIPTORS
    )
    assert limit >= 2 * needed, f"LimitNOFILE={limit} leaves no margin over {needed}"
