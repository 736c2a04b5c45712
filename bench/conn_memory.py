"""Memory per idle signed-in WebSocket connection, measured in the server process.

Our server runs in a child process (no pools); this process opens WARM_UP connections first
(so that one-off allocations, e.g. the first sign-in, do not count), then CONNECTIONS more,
all signed in with a token, and reads the server's RSS growth, after a gc, from /proc.

    python -m bench.conn_memory
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench._common import (
    admin_token,
    close_all,
    connect_many,
    http_session,
    raise_fd_limit,
    row,
    run_as_script,
)
from bench._proc import Child

WARM_UP = 100
CONNECTIONS = 500
TARGET_KIB = 30


async def _run() -> list[dict[str, Any]]:
    raise_fd_limit()
    async with http_session() as http, Child("bench._services:ServerService") as server:
        url = f"ws://127.0.0.1:{server.info['port']}/api/"
        credentials = {"token": await admin_token(http, url)}
        warm = await connect_many(http, url, WARM_UP, credentials)
        clients = []
        try:
            before = await server.call("stats", True)
            clients = await connect_many(http, url, CONNECTIONS, credentials)
            after = await server.call("stats", True)
        finally:
            await close_all([*warm, *clients])
    if after["push_members"] != WARM_UP + CONNECTIONS:
        raise RuntimeError(f"expected {WARM_UP + CONNECTIONS} signed-in connections: {after}")
    per_conn = (after["rss_kib"] - before["rss_kib"]) / CONNECTIONS
    return [
        row(
            f"memory per idle signed-in connection (over {CONNECTIONS})",
            per_conn,
            "KiB",
            TARGET_KIB,
            "<=",
            digits=1,
        )
    ]


def run() -> list[dict[str, Any]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    run_as_script(run)
