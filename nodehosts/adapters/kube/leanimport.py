"""Import only the official client's configuration and transport, not its generated API.

Why: `import kubernetes` runs `kubernetes/__init__.py`, which imports `kubernetes.client` (22.6:
every generated API and model class; 37.x: `kubernetes.config.kube_config` imports `ApiClient`,
whose module imports every model) plus dynamic, watch, stream, leaderelection. nodehosts
parses raw JSON and uses none of that, yet it was the largest part of the daemon's RSS.
Measured by bench/core/bench_sync.py (5000 realistic nodes, bench/README.md "Core (issue 2)"),
steady RSS of `nodehosts run` without -> with this module: 64.2 -> 51.1 MiB with kubernetes
37.0.2, 75.2 -> 53.6 MiB with 22.6 (target 60), peak 66.3 -> 53.4 and 77.5 -> 56.0 MiB.
The client imports alone: 22 -> 8.5 MiB (37.x), 32 -> 8.5 MiB (22.6).

Contract:

- `official_client()` returns the parts nodehosts uses, the same objects as with a plain
  import: `Configuration` (kubernetes.client.configuration), `kubernetes.client.rest`,
  `kubernetes.config.kube_config` and `kubernetes.config.incluster_config`. Thread-safe; the
  imports happen once, on the first call. Raises ImportError when kubernetes is missing.
- The lean path is taken only when nothing of `kubernetes` is imported yet (and
  NODEHOSTS_KUBE_LEAN_IMPORT is not "0"); otherwise the modules are imported the ordinary way
  and whatever is loaded is used as it is. On the lean path, `kubernetes` and
  `kubernetes.client` are registered in sys.modules as the real packages (their real
  `__path__`, `__file__`, `__spec__`, `__loader__`) whose `__init__.py` has not run yet. The
  first lookup of a name such a package lacks (`kubernetes.client.CoreV1Api`,
  `from kubernetes import dynamic`, `kubernetes.__version__`, a star import) runs the real
  `__init__.py` into the same module object once (`kubernetes` first loads `kubernetes.client`,
  as its `__init__` would), then answers it. Other code in the process keeps working, it just
  pays the full cost again; submodule imports (`import kubernetes.watch`,
  `kubernetes.client.models`) never need it. A failed `__init__` leaves the package lazy, and
  the next lookup tries again. Lookups from other threads wait for a running `__init__`; one
  from the thread running it is answered like one on a partially initialised module
  (AttributeError).
- `kube_config` does `from kubernetes.client import ApiClient, Configuration` at import time.
  Its `ApiClient` is a stand-in until the real package is loaded: calling it
  (`new_client_from_config`, the OIDC refresh) loads it and returns a real `ApiClient`; once
  the real package is loaded, the module's global is the real class again. The stand-in is
  never visible as `kubernetes.client.ApiClient`.
- If the lean imports fail (a future client version that needs more than the stubs give), the
  modules registered on the way are dropped, one warning is logged, and the ordinary import
  is used.
- `new_pool_manager(configuration)` is the urllib3 pool that `ApiClient(configuration)` would
  use (`RESTClientObject(configuration).pool_manager`, the same constructor call in 22.6 and
  37.x): TLS verification, CA, client certificates, proxy, `tls_server_name` and keep-alive
  options exactly as the official client sets them up.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    import urllib3
    from kubernetes.client import Configuration

__all__ = ["LEAN_ENV", "OfficialClient", "new_pool_manager", "official_client"]

log = structlog.get_logger(__name__)

LEAN_ENV = "NODEHOSTS_KUBE_LEAN_IMPORT"

_PACKAGE = "kubernetes"
_CLIENT = "kubernetes.client"
# The modules nodehosts uses, in the order they are imported.
_CONFIGURATION = "kubernetes.client.configuration"
_REST = "kubernetes.client.rest"
_KUBE_CONFIG = "kubernetes.config.kube_config"
_INCLUSTER_CONFIG = "kubernetes.config.incluster_config"


@dataclass(frozen=True, slots=True)
class OfficialClient:
    """What nodehosts uses of the official client; `lean` tells how it was imported."""

    configuration_class: type[Configuration]
    rest: ModuleType
    kube_config: ModuleType
    incluster_config: ModuleType
    lean: bool


def new_pool_manager(configuration: Configuration) -> urllib3.PoolManager:
    """The urllib3 pool `ApiClient(configuration)` would build, without ApiClient."""
    pool: urllib3.PoolManager = official_client().rest.RESTClientObject(configuration).pool_manager
    return pool


# One lock for the first import and for every lazy package init: a package init imports the
# other package (`kubernetes` loads `kubernetes.client`), so separate locks could deadlock.
_lock = threading.RLock()
_loaded: list[OfficialClient] = []  # the one result, once imported


def official_client() -> OfficialClient:
    """Import (once) and return the configuration, transport and config loaders."""
    if _loaded:
        return _loaded[0]
    with _lock:
        if not _loaded:
            _loaded.append(_import())
        return _loaded[0]


def _import() -> OfficialClient:
    if os.environ.get(LEAN_ENV, "1") != "0" and not _imported_already():
        before = set(sys.modules)
        try:
            return _import_lean()
        except Exception as error:
            _forget_lean(before)
            log.warning(
                "kubernetes_lean_import_failed",
                error=f"{type(error).__name__}: {error}"[:300],
                fallback="full import",
            )
    return _import_plain(lean=False)


def _imported_already() -> bool:
    prefix = _PACKAGE + "."
    return any(name == _PACKAGE or name.startswith(prefix) for name in list(sys.modules))


def _import_plain(*, lean: bool) -> OfficialClient:
    configuration = importlib.import_module(_CONFIGURATION)
    rest = importlib.import_module(_REST)
    kube_config = importlib.import_module(_KUBE_CONFIG)
    incluster_config = importlib.import_module(_INCLUSTER_CONFIG)
    return OfficialClient(
        configuration_class=configuration.Configuration,
        rest=rest,
        kube_config=kube_config,
        incluster_config=incluster_config,
        lean=lean,
    )


def _import_lean() -> OfficialClient:
    package = _register_lazy(_PACKAGE, parent=None)
    client = _register_lazy(_CLIENT, parent=package)
    package_init, client_init = _inits[package], _inits[client]
    package_init.first = client_init.load  # as kubernetes/__init__ imports kubernetes.client first

    # What kube_config and incluster_config take from `kubernetes.client` at import time. The
    # real package binds the same Configuration class (from this same module).
    configuration = importlib.import_module(_CONFIGURATION)
    names = vars(client)
    names["Configuration"] = configuration.Configuration
    names["ApiClient"] = _api_client_stand_in
    try:
        result = _import_plain(lean=True)
    finally:
        if names.get("ApiClient") is _api_client_stand_in:
            del names["ApiClient"]
    client_init.after = _restore_api_client
    if client_init.loaded:  # something on the way asked for more than the stub has
        _restore_api_client(client)
    return result


def _forget_lean(before: set[str]) -> None:
    """Drop what a failed lean import registered, so the ordinary import starts clean."""
    for name in set(sys.modules) - before:
        if name == _PACKAGE or name.startswith(_PACKAGE + "."):
            _inits.pop(sys.modules.pop(name), None)


# --------------------------------------------------------------------------- lazy packages


class _LazyInit:
    """Runs a package's real `__init__.py` into its (already registered) module, once."""

    def __init__(self, module: ModuleType, spec: ModuleSpec) -> None:
        self.module = module
        self.spec = spec
        self.loaded = False
        self.first: Callable[[], None] | None = None  # run before the package's own __init__
        self.after: Callable[[ModuleType], None] | None = None
        self._loader_thread: int | None = None
        # The module's `__getattr__`: one function object, so that it can be recognised.
        self.hook: Callable[[str], Any] = self._getattr

    def _getattr(self, name: str) -> Any:
        if self._loader_thread == threading.get_ident():  # a lookup from inside the __init__
            raise AttributeError(
                f"partially initialized module {self.module.__name__!r} has no attribute {name!r}"
            )
        self.load()
        return getattr(self.module, name)

    def load(self) -> None:
        with _lock:
            if self.loaded or self._loader_thread is not None:
                return
            self._loader_thread = threading.get_ident()
            names = vars(self.module)
            try:
                if self.first is not None:
                    self.first()
                loader = self.spec.loader
                assert loader is not None
                loader.exec_module(self.module)
            except BaseException:
                names["__getattr__"] = self.hook  # still lazy: the next lookup tries again
                raise
            finally:
                self._loader_thread = None
            # 22.6 defines no __getattr__ (drop ours); 37.x's kubernetes.client has its own
            # lazy one, which replaced ours during the exec.
            if names.get("__getattr__") is self.hook:
                del names["__getattr__"]
            self.loaded = True
            if self.after is not None:
                self.after(self.module)


_inits: dict[ModuleType, _LazyInit] = {}


def _register_lazy(name: str, *, parent: ModuleType | None) -> ModuleType:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    if spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a regular package ({spec.origin})", name=name)
    module = importlib.util.module_from_spec(spec)  # __path__, __file__, __spec__, no exec
    lazy = _LazyInit(module, spec)
    vars(module)["__getattr__"] = lazy.hook
    _inits[module] = lazy
    sys.modules[name] = module
    if parent is not None:
        setattr(parent, name.rpartition(".")[2], module)
    return module


def _api_client_stand_in(*args: Any, **kwargs: Any) -> Any:
    """kube_config's `ApiClient` until the real package is loaded: loads it, builds a real one."""
    api_client = importlib.import_module(_CLIENT).ApiClient
    _point_kube_config_at(api_client)
    return api_client(*args, **kwargs)


def _restore_api_client(client: ModuleType) -> None:
    # After the real kubernetes.client __init__ ran, kube_config gets the real class back, as
    # with a plain import (37.x binds it lazily: this imports api_client and the models). If
    # that fails, the stand-in stays and raises the same error when it is called.
    try:
        api_client = client.ApiClient
    except Exception:
        return
    _point_kube_config_at(api_client)


def _point_kube_config_at(api_client: Any) -> None:
    kube_config = sys.modules.get(_KUBE_CONFIG)
    if kube_config is not None and vars(kube_config).get("ApiClient") is _api_client_stand_in:
        vars(kube_config)["ApiClient"] = api_client
