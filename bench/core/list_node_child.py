"""Child process of bench_sync.py: the official client's plain `CoreV1Api.list_node()`.

Usage: python list_node_child.py KUBECONFIG

Runs in a fresh interpreter so that its time includes `import kubernetes`, exactly like a tool
that would use the client's models. Prints one JSON line once `list_node()` has returned (the
parent stops its clock when it reads that line, before this process tears its objects down):
phase times (import, configuration, list_node), the item count, its CPU time (user+system),
VmHWM and VmRSS.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main() -> int:
    kubeconfig = sys.argv[1]
    started = time.monotonic()
    from kubernetes import client, config

    imported = time.monotonic()
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api = client.CoreV1Api(client.ApiClient(configuration))
    configured = time.monotonic()
    nodes = api.list_node()
    listed = time.monotonic()
    result = {
        "import_s": imported - started,
        "configure_s": configured - imported,
        "list_node_s": listed - configured,
        "items": len(nodes.items),
        "client_version": getattr(sys.modules.get("kubernetes"), "__version__", "?"),
        "cpu_s": sum(os.times()[:2]),
        "vmhwm_kb": _status_kb("VmHWM"),
        "vmrss_kb": _status_kb("VmRSS"),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
