"""What the daemon serves and why, as one immutable value.

Contract: `Status` is frozen; every change is a pure function below that returns a new value
(the daemon holds the current one and replaces it). The records served come from one
`Source`: nothing yet, the saved records of an earlier run (stale, until the first sync) or
the live publication. `generation` is restored once at start (`restored`) and counted up in
one place only (`published`, when what the sinks hold changed). Times are Unix seconds passed
in by the caller: no clock is read here. `systemd_status`, `readiness` and `dump_fields` are
what `systemctl status`, /readyz and `nodehosts dump` show.

With a label selector the daemon also runs a view of every Node (the names outside the
selection stay held): Nodes listed with a selector are not published before that view has
listed (`can_publish`), and its own API error is shown next to the Node source's.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, replace
from typing import Any

from nodehosts.core.model import Publication, RecordSet
from nodehosts.core.records import PublicationCounts, publication_counts

_NOTHING = RecordSet()


class Source(enum.Enum):
    """Where the records served come from."""

    NONE = "none"  # nothing served yet
    SAVED = "saved"  # an earlier run's, from the state file: stale until the first sync
    LIVE = "live"  # this run's publication


@dataclass(frozen=True, slots=True)
class ApiError:
    """The API failure that is going on (the source's reason label and its message)."""

    reason: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class Status:
    """What is served (records, from which source, which generation) and the Node source's
    state behind it (synced, last sync, the API error going on)."""

    records: RecordSet = _NOTHING
    source: Source = Source.NONE
    # The last publication (decisions, collisions) whether or not it changed the records.
    publication: Publication | None = None
    # Its counts (RecordIndex.counts(), kept per change): the STATUS= line reads these on
    # every update rather than walking every decision.
    counts: PublicationCounts | None = None
    # Counts what the sinks hold: hosts-file writes with a hosts file, else record-set changes.
    generation: int = 0
    # A complete LIST has arrived (the publisher may publish).
    synced: bool = False
    resource_version: str | None = None
    last_sync: float | None = None
    last_error: ApiError | None = None
    # When the state file was last written (or, while SAVED, when the served records were).
    state_saved_at: float | None = None
    # The Nodes were listed with a label selector: publishing waits for the cluster view.
    selected: bool = False
    # The cluster view (every Node, unselected): running, listed since it started, its error.
    cluster_running: bool = False
    cluster_listed: bool = False
    cluster_error: ApiError | None = None

    @property
    def can_publish(self) -> bool:
        """A complete LIST is in and, if it was label-selected, so is the view of every Node
        (until then the Nodes outside the selection are unknown, and so are their names)."""
        return self.synced and (not self.selected or self.cluster_listed)

    @property
    def ready(self) -> bool:
        """Every enabled sink holds a live publication (READY=1, /readyz 200)."""
        return self.source is Source.LIVE

    @property
    def stale(self) -> bool:
        return self.source is Source.SAVED

    @property
    def next_generation(self) -> int:
        """The generation a publication that changes the sinks gets (the hosts file header)."""
        return self.generation + 1


# --- transitions


def restored(status: Status, *, generation: int) -> Status:
    """At start: the generation the hosts file header (or the state file) left off at."""
    return replace(status, generation=generation)


def serving_saved(status: Status, records: RecordSet, *, saved_at: float) -> Status:
    """At start, before any sync: the saved records are served, stale."""
    return replace(status, records=records, source=Source.SAVED, state_saved_at=saved_at)


def synced(status: Status, resource_version: str, *, at: float, selected: bool = False) -> Status:
    """A complete LIST arrived (`selected`: with a label selector): the API works, the
    publisher may publish (a selected one: once the cluster view has listed too)."""
    return replace(
        status,
        synced=True,
        resource_version=resource_version,
        last_sync=at,
        last_error=None,
        selected=selected,
    )


def changed(status: Status, resource_version: str, *, at: float) -> Status:
    """A watch event changed the Nodes."""
    return replace(status, resource_version=resource_version, last_sync=at)


def api_failed(status: Status, reason: str, message: str, *, at: float) -> Status:
    return replace(status, last_error=ApiError(reason, message, at))


def api_recovered(status: Status) -> Status:
    return replace(status, last_error=None)


def cluster_started(status: Status) -> Status:
    """A new cluster view runs (at start, for a new selector, or new credentials): what an
    earlier one listed does not count."""
    return replace(status, cluster_running=True, cluster_listed=False, cluster_error=None)


def cluster_listed(status: Status) -> Status:
    """The cluster view delivered every Node."""
    return replace(status, cluster_listed=True, cluster_error=None)


def cluster_failed(status: Status, reason: str, message: str, *, at: float) -> Status:
    """The cluster view's LIST or watch failed (it retries; what it listed stays valid)."""
    return replace(status, cluster_error=ApiError(reason, message, at))


def cluster_recovered(status: Status) -> Status:
    return replace(status, cluster_error=None)


def cluster_stopped(status: Status) -> Status:
    """The Nodes are listed without a selector now: no cluster view any more."""
    return replace(status, cluster_running=False, cluster_listed=False, cluster_error=None)


def published(
    status: Status,
    publication: Publication,
    *,
    counts: PublicationCounts | None = None,
    sinks_changed: bool | None = None,
) -> Status:
    """Every sink holds `publication.records` now.

    `counts`: the publication's (`RecordIndex.counts()`); None counts them by walking it.
    `sinks_changed`: whether the sink that counts generations (the hosts file) was written;
    None when there is no such sink, and then a different record set counts.
    """
    records = publication.records
    if sinks_changed is None:
        sinks_changed = status.source is Source.NONE or records != status.records
    generation = status.next_generation if sinks_changed else status.generation
    return replace(
        status,
        records=records,
        source=Source.LIVE,
        publication=publication,
        counts=publication_counts(publication) if counts is None else counts,
        generation=generation,
    )


def evaluated(
    status: Status, publication: Publication, counts: PublicationCounts | None = None
) -> Status:
    """A publication that left the records as they are (a skipped node, a new note);
    `counts` as for `published`."""
    if counts is None:
        counts = publication_counts(publication)
    return replace(status, publication=publication, counts=counts)


def state_saved(status: Status, *, at: float) -> Status:
    return replace(status, state_saved_at=at)


# --- what it shows


def iso(timestamp: float | None) -> str | None:
    """UTC, to the second, as the logs and `dump` show times."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_CLUSTER_WAIT = "waiting for the list of every Node (label selector)"


def _waiting_for_cluster(status: Status) -> bool:
    return status.synced and not status.can_publish


def systemd_status(status: Status) -> str:
    """The STATUS= line for `systemctl status`."""
    error = status.last_error
    cluster_error = status.cluster_error
    if not status.ready:
        if _waiting_for_cluster(status):
            if status.stale:
                error = cluster_error
                api = _CLUSTER_WAIT + (f", API error: {error.reason}" if error else "")
                return (
                    f"serving saved records, {api}: {len(status.records)} hosts "
                    f"saved {iso(status.state_saved_at)}"
                )
            if cluster_error:
                return f"{_CLUSTER_WAIT}; API error: {cluster_error.reason}"
            return _CLUSTER_WAIT
        if status.stale:
            api = f"API unreachable ({error.reason})" if error else "waiting for the API"
            return (
                f"serving saved records, {api}: {len(status.records)} hosts "
                f"saved {iso(status.state_saved_at)}"
            )
        if status.synced:
            return "publishing the first complete list of Nodes"
        if error:
            return f"waiting for the first list of Nodes; API error: {error.reason}"
        return "waiting for the first list of Nodes"
    counts = status.counts
    published_nodes, nodes = (0, 0) if counts is None else (counts.published, counts.nodes)
    text = (
        f"{published_nodes}/{nodes} nodes published, {len(status.records)} hosts, "
        f"generation {status.generation}, last sync {iso(status.last_sync)}"
    )
    if error:
        text += f"; API error since {iso(error.at)}: {error.reason}"
    if cluster_error:
        text += f"; cluster view API error since {iso(cluster_error.at)}: {cluster_error.reason}"
    if _waiting_for_cluster(status):
        text += f"; {_CLUSTER_WAIT}"
    return text


def readiness(status: Status) -> tuple[bool, str]:
    """(ready, why) for /readyz."""
    if status.ready:
        return True, f"{len(status.records)} hosts published, generation {status.generation}"
    if _waiting_for_cluster(status):
        cluster_error = status.cluster_error
        error = f" (API error: {cluster_error.reason})" if cluster_error else ""
        if status.stale:
            return False, f"serving saved records, {_CLUSTER_WAIT}{error}"
        return False, f"{_CLUSTER_WAIT}{error}"
    error = f" (API error: {status.last_error.reason})" if status.last_error else ""
    if status.stale:
        return False, f"serving saved records until the first sync{error}"
    return False, f"waiting for the first complete list of Nodes{error}"


def dump_fields(status: Status, *, now: float) -> dict[str, Any]:
    """The status part of `nodehosts dump --from daemon` (JSON values)."""
    error = status.last_error
    fields: dict[str, Any] = {
        "ready": status.ready,
        "stale": status.stale,
        "synced": status.synced,
        "generation": status.generation,
        "resource_version": status.resource_version,
        "last_sync": iso(status.last_sync),
        "last_sync_age_seconds": (
            None if status.last_sync is None else round(now - status.last_sync, 3)
        ),
        "last_error": _error_fields(error),
        "state_saved_at": iso(status.state_saved_at),
    }
    if status.cluster_running:  # every Node, for the label selector's outsiders
        fields["cluster_view"] = {
            "listed": status.cluster_listed,
            "last_error": _error_fields(status.cluster_error),
        }
    return fields


def _error_fields(error: ApiError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"reason": error.reason, "message": error.message, "at": iso(error.at)}
