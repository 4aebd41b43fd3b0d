"""Answer times counted into fixed buckets on the DNS hot path, read by the metrics at scrape time.

Its own module so the DNS server does not import prometheus_client (and its ~70 modules,
~4 MB RSS) when metrics are off; nodehosts.adapters.metrics exports it as the histogram
`nodehosts_dns_answer_seconds`.
"""

from __future__ import annotations

import bisect

__all__ = ["ANSWER_SECONDS_BUCKETS", "Durations"]

# Upper bounds of nodehosts_dns_answer_seconds: answers from the zone take microseconds (the
# low buckets show the event loop falling behind), forwarded ones an upstream's round trip,
# up to the forwarder's timeout and failover.
ANSWER_SECONDS_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5)


class Durations:
    """Durations counted by `ANSWER_SECONDS_BUCKETS` bucket, and their sum: a histogram the
    hot path fills with a bisect and two additions (no lock, no prometheus object), read at
    scrape time. `counts[i]` is per bucket, not cumulative; the last one is above every bound.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(ANSWER_SECONDS_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """`count` events that took `seconds` in all, each counted at their mean."""
        self.counts[bisect.bisect_left(ANSWER_SECONDS_BUCKETS, seconds / count)] += count
        self.total += seconds
