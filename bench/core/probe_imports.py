"""Child process of bench_sync.py: RSS after each import step of `nodehosts run`.

Usage: python probe_imports.py [--lean]

Prints one JSON list of [step, VmRSS kB] in the order `nodehosts run` pays for them. With
`--lean`, the kubernetes steps import only what nodehosts uses (kubernetes.client.configuration,
kubernetes.client.rest, kubernetes.config.kube_config) behind stub parent packages, to show
what skipping the generated API classes and models (`kubernetes/__init__` and
`kubernetes/client/__init__` import all of them) would save. Nothing here is used by nodehosts.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _lean_kubernetes() -> None:
    """Stub `kubernetes` and `kubernetes.client` so their heavy __init__ never runs."""
    spec = importlib.util.find_spec("kubernetes")
    if spec is None or spec.origin is None:
        raise SystemExit("kubernetes is not installed")
    root = os.path.dirname(spec.origin)
    package = types.ModuleType("kubernetes")
    package.__path__ = [root]
    client = types.ModuleType("kubernetes.client")
    client.__path__ = [os.path.join(root, "client")]
    sys.modules["kubernetes"] = package
    sys.modules["kubernetes.client"] = client
    configuration = importlib.import_module("kubernetes.client.configuration")
    client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    client.ApiClient = None  # type: ignore[attr-defined]  # only new_client_from_config uses it


def main() -> int:
    lean = "--lean" in sys.argv[1:]
    steps: list[tuple[str, int]] = [("interpreter", _rss_kb())]

    def step(name: str, *modules: str) -> None:
        for module in modules:
            importlib.import_module(module)
        steps.append((name, _rss_kb()))

    step("nodehosts.cli (argparse, config)", "nodehosts.cli")
    step("nodehosts.app (asyncio, structlog, core)", "nodehosts.app")
    step("uvloop", "uvloop")
    step("urllib3", "urllib3")
    if lean:
        _lean_kubernetes()
        step("kubernetes.client.configuration+rest (lean)", "kubernetes.client.rest")
        step("kubernetes.config.kube_config (lean)", "kubernetes.config.kube_config")
    else:
        step("kubernetes.client (all APIs and models)", "kubernetes.client")
        step("kubernetes.config", "kubernetes.config")
    step("nodehosts.adapters.kube", "nodehosts.adapters.kube")
    sys.stdout.write(json.dumps(steps) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
