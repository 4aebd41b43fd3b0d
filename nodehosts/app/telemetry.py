"""What the daemon reports to its metrics, and the stand-in without `metrics.listen`.

Contract: `DaemonMetrics` is every call the daemon, its publisher, reloader and the CSR
approver make on `nodehosts.adapters.metrics.Metrics` (which satisfies it structurally);
`NoMetrics` spells out each one as a no-op, so a misspelt call is a type error, not a
silently ignored attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nodehosts.adapters.metrics import DnsStats
    from nodehosts.core.records import PublicationCounts


class DaemonMetrics(Protocol):
    def observe_counts(self, counts: PublicationCounts) -> None: ...
    def set_generation(self, generation: int) -> None: ...
    def set_ready(self, ready: bool) -> None: ...
    def set_stale(self, stale: bool) -> None: ...
    def synced(self, at: float) -> None: ...
    def api_error(self, reason: str) -> None: ...
    def watch_restart(self, reason: str) -> None: ...
    def hosts_file_written(self, *, at: float) -> None: ...
    def hosts_file_write_failed(self) -> None: ...
    def state_saved(self) -> None: ...
    def state_save_failed(self) -> None: ...
    def reloaded(self, input_name: str, *, ok: bool) -> None: ...
    def csr_approved(self) -> None: ...
    def csr_approval_failed(self, reason: str) -> None: ...
    def set_csr_pending(self, by_reason: Mapping[str, int]) -> None: ...
    def attach_dns(self, stats: DnsStats | None) -> None: ...


class NoMetrics:
    """Without `metrics.listen`: every update is a no-op."""

    def observe_counts(self, counts: PublicationCounts) -> None:
        pass

    def set_generation(self, generation: int) -> None:
        pass

    def set_ready(self, ready: bool) -> None:
        pass

    def set_stale(self, stale: bool) -> None:
        pass

    def synced(self, at: float) -> None:
        pass

    def api_error(self, reason: str) -> None:
        pass

    def watch_restart(self, reason: str) -> None:
        pass

    def hosts_file_written(self, *, at: float) -> None:
        pass

    def hosts_file_write_failed(self) -> None:
        pass

    def state_saved(self) -> None:
        pass

    def state_save_failed(self) -> None:
        pass

    def reloaded(self, input_name: str, *, ok: bool) -> None:
        pass

    def csr_approved(self) -> None:
        pass

    def csr_approval_failed(self, reason: str) -> None:
        pass

    def set_csr_pending(self, by_reason: Mapping[str, int]) -> None:
        pass

    def attach_dns(self, stats: DnsStats | None) -> None:
        pass
