"""Which asyncio event loop nodehosts runs on: uvloop when it is importable, plain asyncio else.

Contract: `run(main)` runs one coroutine to completion on a fresh loop and returns its result,
like `asyncio.run`. The loop is uvloop's when the `uvloop` package can be imported (a
dependency on Linux; python3-uvloop in Debian) unless `use_uvloop=False`; asking for uvloop
when it is missing raises `RuntimeError`. `loop_factory()` gives the factory for
`asyncio.Runner` or tests, `loop_name()` names the running loop for logs.

The DNS server reads its UDP sockets in a loop from a reader callback, so it is about as fast on
either loop (bench/README.md); uvloop is the default because the package is built around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_available() -> bool:
    """True when uvloop can be imported."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_factory(*, use_uvloop: bool | None = None) -> LoopFactory:
    """uvloop's `new_event_loop` (when wanted and available) or asyncio's."""
    if use_uvloop is False:
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if use_uvloop:
            raise RuntimeError("uvloop was requested but cannot be imported") from exc
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None, debug: bool = False) -> T:
    """Run `main` on a new loop (uvloop if available) and return its result."""
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(use_uvloop=use_uvloop)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """ "uvloop" or "asyncio": which implementation `loop` (default: the running one) is."""
    if loop is None:
        loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
