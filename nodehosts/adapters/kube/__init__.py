"""The Kubernetes API adapter: client configuration, transport, LIST/watch decoding, list/watch.

The names below stay importable from the package itself so that `nodehosts.app` keeps working
until it imports them from the modules that hold them.
"""

from nodehosts.adapters.kube.config import (
    SERVICE_ACCOUNT_DIR,
    KubeConfigError,
    load_client_configuration,
)
from nodehosts.adapters.kube.errors import KubeApiError, ResourceExpired
from nodehosts.adapters.kube.reflector import (
    NODES_PATH,
    CollectionSource,
    NodeListener,
    NodeSource,
    Tuning,
    list_nodes,
)
from nodehosts.adapters.kube.transport import KubeTransport, object_path

__all__ = [
    "NODES_PATH",
    "SERVICE_ACCOUNT_DIR",
    "CollectionSource",
    "KubeApiError",
    "KubeConfigError",
    "KubeTransport",
    "NodeListener",
    "NodeSource",
    "ResourceExpired",
    "Tuning",
    "list_nodes",
    "load_client_configuration",
    "object_path",
]
