"""The lab cluster a daemon under test watches: Nodes as a kubelet reports them, in a fake API.

Contract:
- `lab_node(name, address)` is the Node JSON of a lab machine: one InternalIP and a Hostname
  address equal to its name; other `make_node` options (`ready`, `labels`, `realistic`, ...)
  pass through.
- `fake_api(token, *nodes)` is a running `FakeApiServer` that accepts the bearer `token`, with
  `nodes` added in order; it stops at the end of the `with` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from nodehosts.testing.fake_apiserver import FakeApiServer, make_node

__all__ = ["fake_api", "lab_node"]


def lab_node(name: str, address: str, **kwargs: Any) -> dict[str, Any]:
    return make_node(name, addresses=[("InternalIP", address), ("Hostname", name)], **kwargs)


@contextlib.contextmanager
def fake_api(token: str, *nodes: dict[str, Any]) -> Iterator[FakeApiServer]:
    with FakeApiServer(tokens=[token]) as server:
        for node in nodes:
            server.add_object("nodes", node)
        yield server
