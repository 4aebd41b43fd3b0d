"""Approve kubelet serving CSRs that pass every rule of `nodehosts.core.csr`; leave the rest.

Contract:

- `CsrApprover.run()` lists and watches certificates.k8s.io/v1 CertificateSigningRequests with
  the shared list/watch loop (`nodehosts.adapters.kube.reflector`: paging, bookmarks,
  relist on 410, backoff, credentials reloaded on 401/403) until cancelled. Other signers are
  dropped at parsing (the fake API server has no ``spec.signerName`` field selector; pass
  `field_selector` to use the real apiserver's).
- The daemon feeds the Node state with `update_nodes(nodes, records, label_selector=...,
  domain=..., static_hosts=...)` (the Nodes and the record set published from them, the
  selector they were listed with, the record policy's domain and the static hosts as read:
  a static host that lost all its names is in no record, but its address is still the admin's).
  Nothing is evaluated before the first call, so no CSR is reported as "node not found" merely
  because the Nodes were not listed yet.
- "No other Node reports this IP" must see the whole cluster: while the daemon's Nodes are
  label-selected, it feeds its view of every Node (unselected, nodehosts.app's cluster view;
  the record policy needs it too) with `update_cluster(nodes)` (None: not listed yet, or no
  view), and the approver evaluates nothing while the Nodes are label-selected and that view
  is None. The Nodes must come with the selector they were LISTed with (after a reload, the
  old one until the new LIST): selected Nodes passed without a selector would be taken for the
  whole cluster. The view's errors and a crash of its task are the daemon's (its `dump`
  `cluster_view`, its supervision).
- Every undecided kubelet-serving CSR is evaluated (`NodeIndex.evaluate`) whenever the CSRs or
  the Node state change: a CSR that arrived before its Node is approved once the Node appears.
- Approval is a PUT of the CSR, at the version evaluated (409 if it changed meanwhile), to
  ``.../{name}/approval`` with the condition {type Approved, status "True", reason
  NodehostsApproved, message naming the node and the SANs}, over the official client's
  transport, in a worker thread. Nothing else is ever written: no Denied condition (final),
  no create, no delete. A failed approval is logged, counted and retried with a capped backoff.
- Pending CSRs: one log line per CSR per distinct reason (re-evaluation never repeats it; info
  for node_not_found, which resolves itself, warning for the rest), counted in
  `left_pending_total` by reason, listed by `pending()` / `report()` for ``nodehosts dump``.
  An optional `CsrMetrics` (the daemon's `Metrics`) gets `csr_approved()` per approval and
  `set_csr_pending(by_reason)` after every evaluation.
- All methods run on the event loop thread.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from nodehosts.adapters.kube.errors import KubeApiError
from nodehosts.adapters.kube.reflector import CollectionSource, Tuning
from nodehosts.adapters.kube.transport import Backoff, ClientHolder, object_path
from nodehosts.core.csr import (
    DEFAULT_DOMAIN,
    KUBELET_SERVING_SIGNER,
    CsrObject,
    CsrPolicy,
    NodeIndex,
    Reason,
    Verdict,
    csr_from_json,
)
from nodehosts.core.inventory import Inventory
from nodehosts.core.model import Host, NodeInfo, RecordSet

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = [
    "APPROVAL_REASON",
    "CSR_PATH",
    "SIGNER_FIELD_SELECTOR",
    "CsrApprover",
    "CsrMetrics",
    "PendingCsr",
    "approval_body",
]

log = structlog.get_logger(__name__)

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
SIGNER_FIELD_SELECTOR = f"spec.signerName={KUBELET_SERVING_SIGNER}"
APPROVAL_REASON = "NodehostsApproved"
_DEFAULT_TUNING = Tuning()


class CsrMetrics(Protocol):
    """What the approver reports to the metrics (`nodehosts.adapters.metrics.Metrics`)."""

    def csr_approved(self) -> None: ...

    def csr_approval_failed(self, reason: str) -> None: ...

    def set_csr_pending(self, by_reason: Mapping[str, int]) -> None: ...


@dataclass(frozen=True, slots=True)
class PendingCsr:
    """A kubelet serving CSR nodehosts leaves pending, and why (for `nodehosts dump`)."""

    name: str
    node: str | None
    reason: str
    message: str
    # Wall-clock time this reason was first given for this CSR.
    since: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "reason": self.reason,
            "message": self.message,
            "since": self.since,
        }


def approval_body(csr: Mapping[str, Any], message: str, *, now: float) -> dict[str, Any]:
    """The object to PUT to /approval: `csr` as evaluated plus an Approved condition."""
    body = copy.deepcopy(dict(csr))
    status = body.get("status")
    if not isinstance(status, dict):
        status = body["status"] = {}
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    conditions.append(
        {
            "type": "Approved",
            "status": "True",
            "reason": APPROVAL_REASON,
            "message": message,
            "lastUpdateTime": stamp,
        }
    )
    status["conditions"] = conditions
    return body


class CsrApprover:
    """Watches CSRs, evaluates them against the Node state it is fed, approves the good ones."""

    def __init__(
        self,
        configure: Callable[[], Configuration],
        *,
        policy: CsrPolicy,
        metrics: CsrMetrics | None = None,
        tuning: Tuning = _DEFAULT_TUNING,
        field_selector: str | None = None,
        clock: Callable[[], float] = time.time,
        retry_base: float = 1.0,
        retry_cap: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._label_selector: str | None = None  # of the Nodes last fed
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        # Per CSR: attempt n waits uniform(base/2, min(cap, base * 2**n)).
        self._retry_backoff = Backoff(retry_base, retry_cap, rng=self._rng, floor=retry_base / 2)
        self._source = CollectionSource(
            configure,
            Inventory(csr_from_json, rejected=_rejected),
            CSR_PATH,
            on_synced=self._csrs_changed,
            on_changed=self._csrs_changed,
            on_error=self._source_error,
            field_selector=field_selector,
            tuning=tuning,
            rng=rng,
        )
        self._csrs: Mapping[str, CsrObject] | None = None
        self._index: NodeIndex | None = None
        # The Nodes, records or static hosts changed since `_index` was built. It is rebuilt
        # only when some CSR is undecided: building it walks every Node (11 ms at 5000 Nodes),
        # and the daemon feeds the approver after every publication (issue 16).
        self._index_stale = False
        # What the daemon publishes from, and (while it is label-selected) every Node.
        self._selected: Mapping[str, NodeInfo] | None = None
        self._records = RecordSet()
        self._domain = DEFAULT_DOMAIN
        self._static_hosts: tuple[Host, ...] = ()
        self._cluster: Mapping[str, NodeInfo] | None = None
        self._pending: dict[str, PendingCsr] = {}
        # name -> reasons already logged and counted for it (pruned when the CSR goes).
        self._reported: dict[str, set[str]] = {}
        # name -> resourceVersion approved (until the watch shows the Approved condition).
        self._approved: dict[str, str] = {}
        self._in_flight: set[str] = set()
        # name -> (failed attempts, monotonic time before which it is not retried).
        self._backoff: dict[str, tuple[int, float]] = {}
        self._retry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The approvals' own transport (PUTs run in worker threads).
        self._client = ClientHolder(
            configure, connect_timeout=tuning.connect_timeout, read_timeout=tuning.read_timeout
        )
        self.approved_total = 0
        self.approval_failures_total = 0
        self.left_pending_total: Counter[str] = Counter()
        self.last_error: dict[str, str] | None = None

    # ------------------------------------------------------------------ daemon interface

    async def run(self) -> None:
        """List/watch CSRs and approve until cancelled."""
        try:
            await self._source.run()
        finally:
            if self._retry is not None:
                self._retry.cancel()
            self._client.drop()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def update_nodes(
        self,
        nodes: Mapping[str, NodeInfo],
        records: RecordSet,
        *,
        label_selector: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        static_hosts: Sequence[Host] = (),
    ) -> None:
        """The Nodes (listed with `label_selector`), the record set published from them (under
        `domain`) or the static hosts changed: re-evaluate if needed."""
        self._selected, self._records = nodes, records
        self._domain, self._static_hosts = domain, tuple(static_hosts)
        self._label_selector = label_selector
        self._rebuild_index()

    def update_cluster(self, nodes: Mapping[str, NodeInfo] | None) -> None:
        """The daemon's view of every Node changed (None: none listed)."""
        self._cluster = nodes
        self._rebuild_index()

    def restart(self) -> None:
        """Credentials rotated: rebuild the client configuration and relist."""
        self._client.drop()
        self._source.restart()

    def pending(self) -> tuple[PendingCsr, ...]:
        """The kubelet serving CSRs left pending now, by name."""
        return tuple(self._pending[name] for name in sorted(self._pending))

    def pending_by_reason(self) -> dict[str, int]:
        return dict(Counter(entry.reason for entry in self._pending.values()))

    def report(self) -> dict[str, Any]:
        """JSON for `nodehosts dump`."""
        return {
            "synced": self._csrs is not None,
            "nodes_known": self._index is not None or self._can_index(),
            # Judged against the daemon's view of every Node (its Nodes are label-selected).
            "cluster_watch": self._watching_cluster(),
            "pending": [entry.to_json() for entry in self.pending()],
            # Passed every rule; the approval failed and is retried (see the logs for why).
            "retrying": sorted(self._backoff),
            "approved_total": self.approved_total,
            "approval_failures_total": self.approval_failures_total,
            "left_pending_total": dict(sorted(self.left_pending_total.items())),
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ source callbacks

    def _csrs_changed(self, csrs: Mapping[str, CsrObject], resource_version: str) -> None:
        self._csrs = csrs
        self.last_error = None
        self._evaluate_all()

    def _source_error(self, reason: str, message: str) -> None:
        self.last_error = {"reason": reason, "message": message}

    def _watching_cluster(self) -> bool:
        """Whether the Nodes are judged against a view of the whole cluster (label-selected)."""
        return self._label_selector is not None and self._cluster is not None

    def _can_index(self) -> bool:
        """Nodes were fed, and with a label selector so was the view of every Node (with the
        selected Nodes only, "no other Node has this IP" would be blind)."""
        if self._selected is None:
            return False
        return self._label_selector is None or self._cluster is not None

    def _undecided(self) -> bool:
        return self._csrs is not None and any(c.raw is not None for c in self._csrs.values())

    def _rebuild_index(self) -> None:
        """The inputs changed: re-judge now if a CSR waits, else when one comes."""
        self._index_stale = True
        if not self._can_index():
            self._index = None
            return
        if self._undecided() and self._refresh_index():
            self._evaluate_all()

    def _refresh_index(self) -> bool:
        """Build the index if stale; True when it differs from the one before."""
        if not self._index_stale or not self._can_index():
            return False
        assert self._selected is not None
        self._index_stale = False
        cluster = None
        if self._label_selector is not None and self._cluster is not None:
            cluster = self._cluster.values()
        index = NodeIndex.build(
            self._selected.values(),
            self._records,
            cluster,
            domain=self._domain,
            static_hosts=self._static_hosts,
        )
        if index == self._index:
            return False
        self._index = index
        return True

    # ------------------------------------------------------------------ evaluation

    def _evaluate_all(self) -> None:
        if self._undecided():
            self._refresh_index()
        csrs, index = self._csrs, self._index
        if csrs is None or index is None:
            return
        now = time.monotonic()
        pending: dict[str, Verdict] = {}
        retry_at: float | None = None
        for name, csr in csrs.items():
            if csr.raw is None or name in self._in_flight:
                continue
            if self._approved.get(name) == csr.resource_version:
                continue
            verdict = index.evaluate(csr.raw, self.policy)
            if verdict.action == "pending":
                pending[name] = verdict
            elif verdict.action == "approve":
                _, not_before = self._backoff.get(name, (0, 0.0))
                if not_before > now:
                    retry_at = not_before if retry_at is None else min(retry_at, not_before)
                    continue
                self._start_approval(csr, verdict)
        self._update_pending(pending)
        live = {name for name, csr in csrs.items() if csr.raw is not None}
        for table in (self._approved, self._backoff, self._reported):
            for name in table.keys() - live:
                del table[name]
        if retry_at is not None:
            self._schedule_retry(retry_at - now)

    def _update_pending(self, verdicts: Mapping[str, Verdict]) -> None:
        pending: dict[str, PendingCsr] = {}
        for name, verdict in verdicts.items():
            reason = str(verdict.reason)
            before = self._pending.get(name)
            if before is not None and before.reason == reason:
                pending[name] = before
                continue
            pending[name] = PendingCsr(name, verdict.node, reason, verdict.message, self._clock())
            reported = self._reported.setdefault(name, set())
            if reason in reported:
                continue
            reported.add(reason)
            self.left_pending_total[reason] += 1
            level = log.info if reason == Reason.NODE_NOT_FOUND else log.warning
            level(
                "csr_left_pending",
                csr=name,
                node=verdict.node,
                reason=reason,
                message=verdict.message,
            )
        self._pending = pending
        if self._metrics is not None:
            self._metrics.set_csr_pending(self.pending_by_reason())

    # ------------------------------------------------------------------ approval

    def _start_approval(self, csr: CsrObject, verdict: Verdict) -> None:
        self._in_flight.add(csr.name)
        task = asyncio.get_running_loop().create_task(
            self._approve(csr, verdict), name=f"csr_approve_{csr.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _approve(self, csr: CsrObject, verdict: Verdict) -> None:
        assert csr.raw is not None
        body = approval_body(csr.raw, verdict.message, now=self._clock())
        path = object_path(CSR_PATH, csr.name, "approval")
        try:
            await asyncio.to_thread(self._put, path, body)
        except KubeApiError as error:
            self._approval_failed(csr, error)
        else:
            self._approved[csr.name] = csr.resource_version
            self._backoff.pop(csr.name, None)
            self.approved_total += 1
            if self._metrics is not None:
                self._metrics.csr_approved()
            log.info("csr_approved", csr=csr.name, node=verdict.node, message=verdict.message)
        finally:
            self._in_flight.discard(csr.name)

    def _approval_failed(self, csr: CsrObject, error: KubeApiError) -> None:
        if error.status == 404:
            log.info("csr_gone_before_approval", csr=csr.name)
            return
        attempts, _ = self._backoff.get(csr.name, (0, 0.0))
        delay = self._retry_backoff.delay(attempts)
        self._backoff[csr.name] = (min(attempts + 1, 32), time.monotonic() + delay)
        self._client.failed(error)
        if error.status == 409:
            # Changed since we evaluated it: the watch brings the new version, judged afresh.
            log.info("csr_approval_conflict", csr=csr.name, retry_in=round(delay, 3))
        else:
            self.approval_failures_total += 1
            if self._metrics is not None:
                self._metrics.csr_approval_failed(error.reason)
            log.warning(
                "csr_approval_failed",
                csr=csr.name,
                reason=error.reason,
                status=error.status,
                message=error.message,
                retry_in=round(delay, 3),
            )
        self._schedule_retry(delay)

    def _schedule_retry(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay)
        if self._retry is not None and not self._retry.cancelled():
            if self._retry.when() <= when:
                return
            self._retry.cancel()
        self._retry = loop.call_at(when, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._evaluate_all()

    # ------------------------------------------------------------------ worker thread

    def _put(self, path: str, body: Mapping[str, Any]) -> None:
        self._client.current().request_json("PUT", path, body=body)


def _rejected(name: str | None, reason: str) -> None:
    log.warning("object_rejected", path=CSR_PATH, name=name, reason=reason)
