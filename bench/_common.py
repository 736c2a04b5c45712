"""Shared bench helpers: result rows, percentiles, RSS, the fd limit, signed-in WS clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import aiohttp
import orjson

ADMIN = {"email": "admin@admin.net", "password": "admin"}


def row(
    name: str,
    value: float,
    unit: str,
    target: float | None = None,
    op: str = ">=",
    digits: int = 3,
) -> dict[str, Any]:
    """One figure: {name, value, unit, target, op, ok} (no target: informational only)."""
    out: dict[str, Any] = {"name": name, "value": round(value, digits), "unit": unit}
    if target is not None:
        out["target"] = target
        out["op"] = op
        out["ok"] = value >= target if op == ">=" else value <= target
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), KiB."""
    with open(f"/proc/{pid or 'self'}/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int = 20_000) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        target = f"{r['op']} {r['target']}" if "target" in r else "-"
        met = "-" if "ok" not in r else ("yes" if r["ok"] else "NO")
        print(f"{r['name']:<58} {r['value']:>12} {r['unit']:<8} {target:>10} {met}")
    sys.stdout.flush()


def run_as_script(run: Callable[[], list[dict[str, Any]]]) -> NoReturn:
    """`python -m bench.<name>`: one benchmark alone, its rows printed; exit 1 if a target
    is missed."""
    rows = run()
    print_rows(rows)
    sys.exit(0 if all(r.get("ok", True) for r in rows) else 1)


class RpcClient:
    """A minimal xo-lib-like WebSocket client: integer ids, notifications counted/kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.on_notification: Any = None  # callable(raw frame: str, parsed: dict) or None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = orjson.loads(msg.data)
                if "method" in data:
                    if self.on_notification is not None:
                        self.on_notification(msg.data, data)
                    continue
                fut = self._pending.pop(data.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))

    async def call(self, method: str, params: Any = None, timeout: float = 60.0) -> Any:
        self._next_id += 1
        req: dict[str, Any] = {"id": self._next_id, "jsonrpc": "2.0", "method": method}
        if params is not None:
            req["params"] = params
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        await self.ws.send_bytes(orjson.dumps(req))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


async def connect(http: aiohttp.ClientSession, url: str, credentials: Any = None) -> RpcClient:
    ws = await http.ws_connect(url, autoping=True, max_msg_size=256 * 1024 * 1024)
    client = RpcClient(ws)
    if credentials is not None:
        await client.call("session.signIn", credentials)
    return client


async def connect_many(
    http: aiohttp.ClientSession, url: str, n: int, credentials: Any, batch: int = 50
) -> list[RpcClient]:
    clients: list[RpcClient] = []
    for start in range(0, n, batch):
        count = min(batch, n - start)
        clients += await asyncio.gather(*(connect(http, url, credentials) for _ in range(count)))
    return clients


async def admin_token(http: aiohttp.ClientSession, url: str) -> str:
    """A token for cheap sign-ins (a password sign-in costs an scrypt hash)."""
    client = await connect(http, url, ADMIN)
    try:
        return await client.call("token.create", {"description": "bench"})
    finally:
        await client.close()


async def close_all(clients: Sequence[RpcClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
