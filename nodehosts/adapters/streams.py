"""Shared shutdown of the small asyncio stream servers (control socket, metrics endpoint).

Contract: each server keeps the tasks of its open connections in a set; `close_server` stops
accepting, cancels those tasks, waits for them and for the listener. On Python 3.12+
`Server.wait_closed()` waits for open connections, so they must be ended first.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def close_server(server: asyncio.Server, connections: set[asyncio.Task[Any]]) -> None:
    server.close()
    for task in list(connections):
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)
    await server.wait_closed()
