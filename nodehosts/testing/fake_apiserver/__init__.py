"""An in-process fake kube-apiserver that honours the list/watch contract (see `server`)."""

from nodehosts.testing.fake_apiserver.server import (
    NODES,
    ApiStatus,
    FakeApiServer,
    RequestRecord,
    ResourceType,
    SubresourceHandler,
    _Handler,
    make_node,
)

__all__ = [
    "NODES",
    "ApiStatus",
    "FakeApiServer",
    "RequestRecord",
    "ResourceType",
    "SubresourceHandler",
    "_Handler",
    "make_node",
]
