"""Where the API client's configuration comes from, and the files it is built from.

Contract:

- `locate(kubeconfig, environ)` is the one place that decides the source: the given
  kubeconfig, else in-cluster (when KUBERNETES_SERVICE_HOST is set), else $KUBECONFIG (a
  os.pathsep-separated list, merged in order) or ~/.kube/config. It reads no file.
- `load_client_configuration(kubeconfig)` returns the official client's `Configuration` from
  that source; any problem raises `KubeConfigError` naming the file and the problem. Works with
  kubernetes 22.6 and 37.x: only the config loaders are used (imported through `leanimport`).
- `credential_files(kubeconfig, environ)` lists the files that configuration is built from, to
  rebuild the client when they change: each kubeconfig with the certificate, key and token
  files its current context uses (`kubeconfig_files`), or in-cluster the service account's CA
  (not its token: the client re-reads a rotated token by itself, and a relist every time the
  kubelet rotates it would be a waste). Blocking (reads the kubeconfigs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodehosts.adapters.kube.errors import describe
from nodehosts.adapters.kube.leanimport import OfficialClient, official_client

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "InCluster",
    "KubeConfigError",
    "Kubeconfig",
    "credential_files",
    "kubeconfig_files",
    "load_client_configuration",
    "locate",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(Exception):
    """The client configuration cannot be loaded; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Kubeconfig:
    """Kubeconfig files, merged in this order; `default` when none was given (then `named`,
    $KUBECONFIG or ~/.kube/config as written, is what messages name)."""

    paths: tuple[str, ...]
    named: str
    default: bool


@dataclass(frozen=True, slots=True)
class InCluster:
    """The pod's service account (token, CA) and KUBERNETES_SERVICE_HOST/_PORT."""

    directory: Path


def locate(
    kubeconfig: Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Kubeconfig | InCluster:
    """Which configuration applies: the given kubeconfig, else in-cluster, else the default."""
    env = os.environ if environ is None else environ
    if kubeconfig is not None:
        return Kubeconfig((str(kubeconfig),), str(kubeconfig), default=False)
    if env.get("KUBERNETES_SERVICE_HOST"):
        return InCluster(service_account_dir)
    named = env.get("KUBECONFIG") or "~/.kube/config"
    paths = tuple(os.path.expanduser(p) for p in named.split(os.pathsep) if p)
    return Kubeconfig(paths, named, default=True)


def load_client_configuration(
    kubeconfig: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Configuration:
    """The official client's Configuration: kubeconfig, else in-cluster, else the default file."""
    # Imported on first use, and only the client's configuration and transport (leanimport):
    # `nodehosts --version` and `check-config` should not pay for it at all.
    client = official_client()

    env = os.environ if environ is None else environ
    source = locate(kubeconfig, env, service_account_dir=service_account_dir)
    if isinstance(source, InCluster):
        return _in_cluster(env, source.directory, client)
    if source.default and not any(os.path.exists(p) for p in source.paths):
        raise KubeConfigError(
            f"{source.named}: no such file, and KUBERNETES_SERVICE_HOST is not set (not in a "
            "pod); pass --kubeconfig"
        )
    return _from_kubeconfig(os.pathsep.join(source.paths), client)


def _from_kubeconfig(path: str, client: OfficialClient) -> Configuration:
    if os.pathsep not in path and not os.path.isfile(path):
        raise KubeConfigError(f"{path}: no such file")
    configuration = client.configuration_class()
    try:
        client.kube_config.load_kube_config(
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except Exception as error:  # the loader raises anything from yaml to KeyError
        raise KubeConfigError(f"{path}: {describe(error)}") from error
    if not configuration.host:
        raise KubeConfigError(f"{path}: the current context has no cluster server")
    return configuration


def _in_cluster(env: Mapping[str, str], directory: Path, client: OfficialClient) -> Configuration:
    configuration = client.configuration_class()
    try:
        client.incluster_config.InClusterConfigLoader(
            token_filename=str(directory / "token"),
            cert_filename=str(directory / "ca.crt"),
            environ=env,
        ).load_and_set(configuration)
    except Exception as error:
        raise KubeConfigError(
            f"{directory}: in-cluster configuration (KUBERNETES_SERVICE_HOST is set): "
            f"{describe(error)}"
        ) from error
    return configuration


def credential_files(
    kubeconfig: Path | None, environ: Mapping[str, str] | None = None
) -> frozenset[Path]:
    """The files the API client is built from, to rebuild it when they change (blocking)."""
    source = locate(kubeconfig, environ)
    if isinstance(source, InCluster):
        return frozenset({source.directory / "ca.crt"})
    files: set[Path] = set()
    for path in source.paths:
        files |= kubeconfig_files(Path(path))
    return frozenset(files)


def kubeconfig_files(kubeconfig: Path) -> frozenset[Path]:
    """The kubeconfig and the CA, client certificate, key and token files its context uses.

    Relative paths are relative to the kubeconfig's directory (as kubectl reads them). A
    kubeconfig that cannot be read or parsed gives just itself: watching it is how a fixed
    one gets noticed.
    """
    import yaml  # a dependency of the kubernetes client; only needed here

    files = {Path(os.path.abspath(kubeconfig))}
    try:
        document = yaml.safe_load(Path(kubeconfig).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return frozenset(files)
    if not isinstance(document, dict):
        return frozenset(files)
    base = Path(os.path.abspath(kubeconfig)).parent

    def named(section: str, key: str) -> list[dict[str, Any]]:
        entries = document.get(section)
        if not isinstance(entries, list):
            return []
        out = []
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get(key), dict):
                out.append({"name": entry.get("name"), **entry[key]})
        return out

    contexts = {c.get("name"): c for c in named("contexts", "context")}
    current = contexts.get(document.get("current-context"))
    users = named("users", "user")
    clusters = named("clusters", "cluster")
    if current is not None:  # only what is used; without a current context, everything
        users = [u for u in users if u.get("name") == current.get("user")]
        clusters = [c for c in clusters if c.get("name") == current.get("cluster")]
    for entry, keys in [(u, ("client-certificate", "client-key", "tokenFile")) for u in users] + [
        (c, ("certificate-authority",)) for c in clusters
    ]:
        for key in keys:
            value = entry.get(key)
            if isinstance(value, str) and value:
                files.add(Path(os.path.abspath(base / os.path.expanduser(value))))
    return frozenset(files)
