"""Record sets for the tests of what is published: Hosts as the record builder makes them.

Contract: `node_host(name, *addresses)` is the Host of a Node `name` in the default domain
(node.internal): the FQDN first, then the bare name; the addresses IPv4 first, each family in
order, as `build_publication` sorts them.
"""

from __future__ import annotations

import ipaddress

from nodehosts.core.model import Host

__all__ = ["node_host"]


def node_host(name: str, *addresses: str) -> Host:
    return Host(
        names=(f"{name}.node.internal", name),
        addresses=tuple(
            sorted((ipaddress.ip_address(a) for a in addresses), key=lambda a: (a.version, a))
        ),
        origin="node",
        node=name,
    )
