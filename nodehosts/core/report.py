"""Publication -> plain JSON-able data, for `nodehosts dump --format json` and the control socket.

Contract: pure and deterministic; the same Publication always gives the same dict, with
addresses as strings and nodes in name order.
"""

from __future__ import annotations

from typing import Any

from nodehosts.core.model import Publication


def publication_report(publication: Publication) -> dict[str, Any]:
    """Every node with its decision, then the published hosts and the name collisions."""
    records = publication.records
    return {
        "counts": {
            "nodes": len(publication.decisions),
            "published_nodes": sum(1 for d in publication.decisions if d.published),
            "hosts": len(records.hosts),
            "addresses": records.address_count(),
        },
        "nodes": [
            {
                "name": decision.node,
                "published": decision.published,
                "names": list(decision.names),
                "addresses": [str(address) for address in decision.addresses],
                "ready": decision.ready,
                "unschedulable": decision.unschedulable,
                "reason": decision.reason,
            }
            for decision in publication.decisions
        ],
        "hosts": [
            {
                "names": list(host.names),
                "addresses": [str(address) for address in host.addresses],
                "origin": host.origin,
                "node": host.node,
            }
            for host in records.hosts
        ],
        "collisions": [
            {"name": c.name, "winner": c.winner, "losers": list(c.losers)}
            for c in publication.collisions
        ],
    }
