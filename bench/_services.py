"""Services the benchmarks run in child processes (bench/_proc.py): our server, a bare aiohttp
responder/broadcaster (the physical limit), and the XAPI simulator."""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bench._common import percentile, raise_fd_limit, rss_kib

LAG_INTERVAL_S = 0.005


class LagMonitor:
    """Event-loop lag: how late a `sleep(LAG_INTERVAL_S)` wakes up, sampled continuously."""

    def __init__(self) -> None:
        self.samples: collections.deque[float] = collections.deque(maxlen=200_000)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            self.samples.append(max(0.0, loop.time() - start - LAG_INTERVAL_S))

    def summary(self) -> dict[str, float]:
        s = list(self.samples)
        return {
            "lag_p50_ms": percentile(s, 50) * 1000,
            "lag_p99_ms": percentile(s, 99) * 1000,
            "lag_max_ms": max(s, default=0.0) * 1000,
            "lag_samples": len(s),
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class ServerService:
    """xo-migrate's aiohttp app on 127.0.0.1:<ephemeral>, connected to the given pools."""

    def __init__(
        self,
        pools: list[dict[str, Any]] | None = None,
        migration: dict[str, Any] | None = None,
        database: str = "",
        data_dir: str = "",
    ) -> None:
        self._pools = pools or []
        self._migration = migration or {}
        self._database = database  # [database] url: "" is SQLite, else a Redis cluster
        self._lag = LagMonitor()
        self._runner: Any = None
        self._app: Any = None
        self._own_dir = not data_dir  # instances of a cluster share theirs (secret.key)
        self._dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="xo-bench-"))

    async def start(self) -> dict[str, Any]:

        from server.app import GUARD, STATE, build_app
        from server.auth import AuthSettings
        from server.config import ServerConfig, manifest_pool_config
        from server.gc_tuning import tune_for_server
        from server.guard import ConnectionLimits, GuardedSite, make_runner
        from server.migrations.service import MigrationSettings
        from server.storage import DatabaseSettings

        raise_fd_limit()
        tune_for_server()  # as `xo-migrate serve` does
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            data_dir=self._dir,
            auth=AuthSettings(throttling_delay_s=0.3),
            pools=[manifest_pool_config(p) for p in self._pools],
            migration=MigrationSettings(**self._migration),
            # Every check on, as `xo-migrate serve`; only the per-address cap is raised: all
            # the load comes from one address (1000 clients for fanout).
            connections=ConnectionLimits(max_connections_per_address=4096, backlog=4096),
            database=DatabaseSettings(url=self._database),
        )
        self._app = build_app(config)
        self._state = self._app[STATE]
        self._runner = make_runner(
            self._app, config.connections, access_log=None, shutdown_timeout=2
        )
        await self._runner.setup()
        site = GuardedSite(self._runner, "127.0.0.1", 0, guard=self._app[GUARD])
        await site.start()
        self._lag.start()
        return {"port": self._runner.addresses[0][1], "pid": os.getpid()}

    async def wait_pools(self, timeout: float = 60.0) -> float:
        """Seconds until every pool is connected with a complete cache."""
        start = time.monotonic()
        for conn in self._state.pools.connections():
            await conn.wait_ready(timeout)
        return time.monotonic() - start

    async def add_pool(self, pool: dict[str, Any], timeout: float = 120.0) -> float:
        """Connect one more pool; seconds until its initial sync is complete."""
        from server.config import manifest_pool_config

        cfg = manifest_pool_config(pool)
        start = time.monotonic()
        await self._state.pools.add(cfg)
        conn = self._state.pools.connection(cfg.id)
        await conn.wait_ready(timeout)
        return time.monotonic() - start

    async def add_users(self, grants: list[list[list[str]]]) -> list[str]:
        """Non-admin users, one per item of `grants` (its ACL entries, [object id, role]
        each), without passwords (a password hash costs most of a second): a token each."""
        import uuid

        from server.storage.records import User

        tokens = []
        for i, entries in enumerate(grants):
            user = User(str(uuid.uuid4()), f"bench-{i}@example.net", "!", "none")
            await self._state.storage.add_user(user)
            for obj, role in entries:
                await self._state.acl.add(user.id, obj, role)
            tokens.append(await self._state.auth.create_token(user, description="bench"))
        return tokens

    async def stats(self, collect: bool = False) -> dict[str, Any]:
        if collect:
            gc.collect()
            await asyncio.sleep(0.2)
        return {
            "rss_kib": rss_kib(),
            "connections": len(self._state.connections),
            "push_members": len(self._state.push),
            "objects": len(self._state.store),
            **self._lag.summary(),
        }

    async def lag_reset(self) -> None:
        self._lag.samples.clear()

    async def stop(self) -> None:
        await self._lag.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class BareService:
    """The physical limit: aiohttp WebSockets with nothing but orjson in between.

    /rpc: parse, answer inline, serialize. /fanout: sockets kept in a set; POST /broadcast
    sends the request body as one text frame to each of them.
    """

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._lag = LagMonitor()

    async def start(self) -> dict[str, Any]:
        raise_fd_limit()
        app = web.Application()
        app.router.add_get("/rpc", self._rpc)
        app.router.add_get("/fanout", self._fanout)
        app.router.add_post("/broadcast", self._broadcast)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        self._lag.start()
        return {"port": self._runner.addresses[0][1], "pid": os.getpid()}

    async def _rpc(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                req = orjson.loads(msg.data)
                await ws.send_frame(
                    orjson.dumps({"id": req["id"], "jsonrpc": "2.0", "result": "0.0.0"}),
                    WSMsgType.TEXT,
                )
        return ws

    async def _fanout(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            self._sockets.discard(ws)
        return ws

    async def _broadcast(self, request: web.Request) -> web.Response:
        payload = await request.read()
        for ws in list(self._sockets):
            await ws.send_frame(payload, WSMsgType.TEXT)
        return web.Response(text="ok")

    async def stats(self, collect: bool = False) -> dict[str, Any]:
        return {"rss_kib": rss_kib(), "sockets": len(self._sockets), **self._lag.summary()}

    async def stop(self) -> None:
        await self._lag.stop()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()


class SimService:
    """The XAPI simulator: the default lab, or `generate_lab(*generate)`."""

    def __init__(self, time_scale: float, generate: list[int] | None = None) -> None:
        from xen.sim import Simulator, generate_lab, load_lab

        lab = generate_lab(*generate) if generate else load_lab()
        self.sim = Simulator(lab, port=0, time_scale=time_scale)

    async def start(self) -> dict[str, Any]:
        raise_fd_limit()
        await self.sim.start()
        return {**self.sim.manifest(), "pid": os.getpid()}

    async def stats(self) -> dict[str, dict[str, int]]:
        return {p.name: p.stats() for p in self.sim.pools}

    async def reset_stats(self) -> None:
        for p in self.sim.pools:
            p.reset_stats()

    async def set_event_batch_delay(self, seconds: float) -> None:
        """xapi holds an event.from answer 50 ms to batch a burst; 0 measures the rest."""
        for p in self.sim.pools:
            p.event_batch_delay_s = seconds

    async def rename(self, pool: int, name: str, new_name: str) -> None:
        """Rename the VM named `name` of the `pool`-th pool (a change for event.from)."""
        db = self.sim.pools[pool].db
        ref = db.find_one("VM", name_label=name)
        if ref is None:
            raise KeyError(name)
        db.update("VM", ref, name_label=new_name)

    async def stop(self) -> None:
        await self.sim.stop()
