"""Live reloads: the config file, the static hosts file and the API credentials.

Contract: `Reloader.start()` watches the config file, the static hosts file and the kubeconfig
with the credential files it names (nodehosts.adapters.filewatch); a change re-applies what
that file feeds, and `reload()` (SIGHUP) re-reads all of them. Reloads never overlap. A config
that does not validate is rejected (`config_rejected`, naming the key) and the running one
stays; `LIVE_KEYS` apply at once (a new Settings is swapped into the target), the others keep
their running values and are logged as `config_needs_restart`. A static hosts file that cannot
be read, or credentials that do not load, are rejected the same way. New credentials (or a
new kubeconfig) rebuild the API client of every source (the target restarts them all, the
cluster view and the approver too); a new label selector needs a new Node source. A reload
that changes both does both.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from nodehosts.app.publisher import Publisher, read_static_hosts
from nodehosts.app.telemetry import DaemonMetrics
from nodehosts.config import LIVE_KEYS, POLICY_KEYS, ConfigError, Settings, file_key

if TYPE_CHECKING:
    from nodehosts.adapters.filewatch import FileWatcher

log = structlog.get_logger(__name__)

# Settings a reload applies that change the records at once: they ask for a new publication.
# (What a reload applies at all is config.LIVE_KEYS, declared on each setting; the rest is bound
# at start and needs a restart.) The label selector and the static hosts file are policy too,
# but inputs of their own: a new source or a re-read file publishes when its data is in.
RECORD_POLICY_KEYS = frozenset(POLICY_KEYS) - {"label_selector", "static_hosts"}
# The DNS server's zone is built from the domain when it starts.
DNS_ZONE_KEYS = frozenset({"domain"})


def plan_settings_change(old: Settings, new: Settings) -> tuple[Settings, list[str], list[str]]:
    """What a reload does: (settings to run with, fields applied live, fields needing a restart).

    The fields that need a restart keep their running values in the returned settings.
    """
    changed = [
        f.name
        for f in fields(Settings)
        if f.compare and getattr(old, f.name) != getattr(new, f.name)
    ]
    live_keys = LIVE_KEYS - DNS_ZONE_KEYS if old.dns_listen else LIVE_KEYS
    live = [name for name in changed if name in live_keys]
    restart = [name for name in changed if name not in live_keys]
    if restart:
        new = replace(new, **{name: getattr(old, name) for name in restart})
    return new, live, restart


def credential_files(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> frozenset[Path]:
    """The files the API client is built from, to rebuild it when they change (blocking)."""
    from nodehosts.adapters.kube.config import credential_files as kube_credential_files

    return kube_credential_files(settings.kubeconfig, environ)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


class ReloadTarget(Protocol):
    """What a reload changes in the daemon."""

    settings: Settings

    def restart_sources(self, reason: str) -> None:
        """Rebuild the API client: relist with the new credentials."""

    def replace_node_source(self) -> None:
        """A new label selector: a new Node source, a new LIST."""


class Reloader:
    def __init__(
        self,
        target: ReloadTarget,
        publisher: Publisher,
        metrics: DaemonMetrics,
        load_settings: Callable[[], Settings] | None,
    ) -> None:
        self._target = target
        self._publisher = publisher
        self._metrics = metrics
        # Re-reads the config file and applies the command line again (blocking); None: the
        # settings never change (no config file to reload).
        self._load_settings = load_settings
        self._lock = asyncio.Lock()
        self._watcher: FileWatcher | None = None
        self._credential_paths: frozenset[Path] = frozenset()

    async def start(self) -> None:
        """Watch the input files; without a watcher (inotify limits) SIGHUP still works."""
        try:
            from nodehosts.adapters.filewatch import FileWatcher

            paths = await self._watched_paths()
            watcher = FileWatcher(paths, self._files_changed)
            await watcher.start()
        except Exception as error:
            log.error("file_watcher_start_failed", error=str(error), fallback="SIGHUP")
            return
        self._watcher = watcher

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()

    async def reload(self, *, trigger: str) -> None:
        """Re-read the config, the static hosts and the credentials (SIGHUP)."""
        async with self._lock:
            await self._reload_config(trigger=trigger)
            await self.reload_static_hosts()
            await self._reload_credentials(frozenset(), trigger=trigger)
            await self._refresh_watch()
        log.info("reload_finished", trigger=trigger)

    async def _watched_paths(self) -> frozenset[Path]:
        settings = self._target.settings
        try:
            credentials = await asyncio.to_thread(credential_files, settings)
        except Exception as error:
            log.warning("credential_files_unknown", error=str(error))
            credentials = frozenset()
        self._credential_paths = frozenset(_absolute(p) for p in credentials)
        paths = set(self._credential_paths)
        for path in (settings.config_path, settings.static_hosts):
            if path is not None:
                paths.add(_absolute(path))
        return frozenset(paths)

    async def _refresh_watch(self) -> None:
        paths = await self._watched_paths()
        if self._watcher is not None:
            await self._watcher.set_paths(paths)

    async def _files_changed(self, changed: frozenset[Path]) -> None:
        """The FileWatcher saw some watched files change: re-apply what they feed."""
        async with self._lock:
            before = self._target.settings
            if before.config_path is not None and _absolute(before.config_path) in changed:
                await self._reload_config(trigger="file")
            static = self._target.settings.static_hosts
            if (
                static is not None
                and static == before.static_hosts
                and _absolute(static) in changed
            ):
                await self.reload_static_hosts()
            credentials = changed & self._credential_paths
            if credentials:
                await self._reload_credentials(credentials, trigger="file")
            await self._refresh_watch()

    async def _reload_config(self, *, trigger: str) -> None:
        loader = self._load_settings
        if loader is None:
            return
        try:
            new = await asyncio.to_thread(loader)
        except ConfigError as error:
            log.error(
                "config_rejected",
                key=error.where or "file",
                error=str(error),
                trigger=trigger,
                kept="the running configuration",
            )
            self._metrics.reloaded("config", ok=False)
            return
        self._metrics.reloaded("config", ok=True)
        await self.apply_settings(new, trigger=trigger)

    async def apply_settings(self, new: Settings, *, trigger: str = "api") -> None:
        """Swap in `new`, applying what can change live; the rest waits for a restart."""
        target = self._target
        applied, live, restart = plan_settings_change(target.settings, new)
        if restart:
            log.warning(
                "config_needs_restart",
                keys=[file_key(name) for name in restart],
                trigger=trigger,
                kept="the running values of these keys until a restart",
            )
        target.settings = applied
        log.info("config_reloaded", changed=[file_key(name) for name in live], trigger=trigger)
        if not live:
            return
        if "log_format" in live or "log_level" in live:
            from nodehosts import logs

            logs.configure(applied.log_format, applied.log_level)
        if "static_hosts" in live:
            await self.reload_static_hosts()
        # Independent: a new selector replaces the selected source only, and a new kubeconfig
        # must reach every source (the cluster view and the approver too), even both at once.
        if "label_selector" in live:
            target.replace_node_source()
        if "kubeconfig" in live:
            target.restart_sources("kubeconfig")
        if RECORD_POLICY_KEYS.intersection(live):
            self._publisher.request()

    async def reload_static_hosts(self, *, publish: bool = True) -> None:
        """Read the static hosts file into the publisher (`publish=False`: the first read)."""
        publisher = self._publisher
        path = self._target.settings.static_hosts
        try:
            hosts = await asyncio.to_thread(read_static_hosts, path)
        except (OSError, ValueError) as error:
            log.error(
                "static_hosts_rejected",
                path=str(path),
                error=str(error),
                kept=len(publisher.static_hosts),
            )
            self._metrics.reloaded("static_hosts", ok=False)
            return
        if publish:
            self._metrics.reloaded("static_hosts", ok=True)
        if hosts == publisher.static_hosts:
            return
        publisher.static_hosts = hosts
        if not publish:
            return
        log.info("static_hosts_reloaded", path=str(path) if path else None, hosts=len(hosts))
        publisher.request()

    async def _reload_credentials(self, changed: frozenset[Path], *, trigger: str) -> None:
        """Rebuild the API client from the kubeconfig (or in-cluster files) if they load."""
        from nodehosts.adapters.kube.config import KubeConfigError, load_client_configuration

        try:
            await asyncio.to_thread(load_client_configuration, self._target.settings.kubeconfig)
        except KubeConfigError as error:
            log.error(
                "credentials_rejected",
                files=sorted(map(str, changed)),
                error=str(error),
                kept="the running API client",
            )
            self._metrics.reloaded("credentials", ok=False)
            return
        log.info("credentials_reloaded", files=sorted(map(str, changed)), trigger=trigger)
        self._metrics.reloaded("credentials", ok=True)
        self._target.restart_sources("credentials")
