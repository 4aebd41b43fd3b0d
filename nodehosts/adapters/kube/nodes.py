"""The cluster's Nodes: the list/watch source the daemon listens to, and a one-shot LIST.

Contract:

- `NodeSource(configure, listener)` is a `CollectionSource` of /api/v1/nodes (optionally
  label-selected) parsed into `NodeInfo` (`NodeInventory`: a Node that cannot be parsed is
  logged as `object_rejected` and left out), delivering to a `NodeListener` on the event loop.
- `HostnameSource(configure, on_synced, on_changed, on_error, on_recovered)`: every Node (no
  selector), each as its `Hostname` only (`hostname_from_json`): with a label selector, who holds
  which name outside the selection (`build_publication`'s `hidden`). The mapping it delivers is
  the same object while no name or Hostname changed; heartbeats call nothing.
- `list_nodes(configuration)` is one paged LIST of Nodes, for `nodehosts dump` and `run --once`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from nodehosts.adapters.kube.reflector import CollectionSource, Tuning, list_into
from nodehosts.adapters.kube.transport import KubeTransport
from nodehosts.core.inventory import Inventory, NodeInventory
from nodehosts.core.model import NodeInfo
from nodehosts.core.nodes import BadNode, hostname_from_json

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = ["NODES_PATH", "HostnameSource", "NodeListener", "NodeSource", "list_nodes"]

log = structlog.get_logger(__name__)

NODES_PATH = "/api/v1/nodes"
_DEFAULT_TUNING = Tuning()


class NodeListener(Protocol):
    """Receives the Node state; every method is called on the event loop thread."""

    def nodes_synced(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        """After every complete LIST (the first and each relist)."""

    def nodes_changed(self, nodes: Mapping[str, NodeInfo], resource_version: str) -> None:
        """Only when some NodeInfo was added, removed or changed."""

    def source_error(self, reason: str, message: str) -> None:
        """Each failure; the last state stays valid and the source keeps retrying."""


def _rejected_logger(path: str) -> Callable[[str | None, str], None]:
    def rejected(name: str | None, reason: str) -> None:
        log.warning("object_rejected", path=path, name=name, reason=reason)

    return rejected


class NodeSource(CollectionSource[NodeInfo]):
    """Watches the cluster's Nodes (optionally a label-selected subset) for a NodeListener.

    If the listener also has `source_recovered()`, it is called on the first success after
    failures (a resumed watch does not relist, so no `nodes_synced` follows an outage).
    """

    def __init__(
        self,
        configure: Callable[[], Configuration],
        listener: NodeListener,
        *,
        label_selector: str | None = None,
        tuning: Tuning = _DEFAULT_TUNING,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            configure,
            NodeInventory(rejected=_rejected_logger(NODES_PATH)),
            NODES_PATH,
            on_synced=listener.nodes_synced,
            on_changed=listener.nodes_changed,
            on_error=listener.source_error,
            on_recovered=getattr(listener, "source_recovered", None),
            label_selector=label_selector,
            tuning=tuning,
            rng=rng,
        )


class HostnameSource(CollectionSource[str | None]):
    """Watches every Node (no selector) for its name and `Hostname` only: the lean view of the
    Nodes outside a label selection (a Node that cannot be parsed is logged and left out, as
    in `NodeSource`)."""

    def __init__(
        self,
        configure: Callable[[], Configuration],
        *,
        on_synced: Callable[[Mapping[str, str | None], str], None],
        on_changed: Callable[[Mapping[str, str | None], str], None],
        on_error: Callable[[str, str], None],
        on_recovered: Callable[[], None] | None = None,
        tuning: Tuning = _DEFAULT_TUNING,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            configure,
            Inventory(hostname_from_json, errors=(BadNode,), rejected=_rejected_logger(NODES_PATH)),
            NODES_PATH,
            on_synced=on_synced,
            on_changed=on_changed,
            on_error=on_error,
            on_recovered=on_recovered,
            tuning=tuning,
            rng=rng,
        )


def list_nodes(
    configuration: Configuration,
    *,
    label_selector: str | None = None,
    tuning: Tuning = _DEFAULT_TUNING,
) -> tuple[dict[str, NodeInfo], str]:
    """One paged LIST of Nodes: (name -> NodeInfo, resourceVersion). Raises KubeApiError."""
    transport = KubeTransport(
        configuration, connect_timeout=tuning.connect_timeout, read_timeout=tuning.read_timeout
    )
    inventory = NodeInventory(rejected=_rejected_logger(NODES_PATH))
    try:
        list_into(
            inventory,
            transport,
            NODES_PATH,
            selectors={"labelSelector": label_selector} if label_selector else {},
            page_size=tuning.page_size,
        )
    finally:
        transport.close()
    return dict(inventory.objects), inventory.resource_version
