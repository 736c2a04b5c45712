"""All configured pools: one PoolConnection each, connecting concurrently and independently.

`add` returns at once (the connection works in the background), so a slow or dead pool never
delays the others, the server start or the API. Disabling or removing a pool withdraws its
objects from the store, as xo-server does when a server is disconnected; a transient loss of
connection keeps them until the resync.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from xen.config import PoolConfig
from xen.pool import ConnectionOptions, PoolConnection
from xen.store import ObjectStore

log = logging.getLogger("xo_migrate.xen.pools")


class PoolManager:
    def __init__(self, store: ObjectStore, options: ConnectionOptions | None = None) -> None:
        self.store = store
        self.options = options or ConnectionOptions()
        self._configs: dict[str, PoolConfig] = {}
        self._connections: dict[str, PoolConnection] = {}
        self._started = False

    async def start(self) -> None:
        self._started = True
        for server_id, cfg in self._configs.items():
            if cfg.enabled and server_id not in self._connections:
                self._connect(cfg)

    async def aclose(self) -> None:
        self._started = False
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)

    async def add(self, cfg: PoolConfig) -> None:
        """Register a pool; connect in the background (now if started, else at start())."""
        if cfg.id in self._configs:
            await self.remove(cfg.id)
        self._configs[cfg.id] = cfg
        if cfg.enabled and self._started:
            self._connect(cfg)

    async def remove(self, server_id: str) -> None:
        await self._disconnect(server_id)
        self._configs.pop(server_id, None)

    async def enable(self, server_id: str) -> None:
        cfg = self._configs[server_id]
        cfg.enabled = True
        if self._started:
            # Re-enabling also restarts a connection that gave up (e.g. wrong credentials).
            await self._disconnect(server_id)
            self._connect(cfg)

    async def disable(self, server_id: str) -> None:
        cfg = self._configs[server_id]
        cfg.enabled = False
        await self._disconnect(server_id)

    def statuses(self) -> list[dict[str, Any]]:
        out = []
        for server_id, cfg in self._configs.items():
            conn = self._connections.get(server_id)
            entry: dict[str, Any] = {
                "id": server_id,
                "host": cfg.url,
                "label": cfg.label,
                "username": cfg.username,
                "enabled": cfg.enabled,
                "allowUnauthorized": cfg.allow_unauthorized,
                "status": conn.status if conn is not None else "disconnected",
            }
            if cfg.credentials_error:
                entry["error"] = cfg.credentials_error
            if conn is not None:
                if conn.last_error:
                    entry["error"] = conn.last_error
                if conn.pool_id:
                    entry["poolId"] = conn.pool_id
            out.append(entry)
        return out

    def config(self, server_id: str) -> PoolConfig | None:
        return self._configs.get(server_id)

    def connection(self, server_id: str) -> PoolConnection | None:
        return self._connections.get(server_id)

    def connection_for_pool(self, pool_uuid: str) -> PoolConnection | None:
        best = None
        for conn in self._connections.values():
            if conn.pool_id == pool_uuid:
                if conn.status == "connected":
                    return conn
                best = best or conn
        return best

    def connections(self) -> list[PoolConnection]:
        return list(self._connections.values())

    def _connect(self, cfg: PoolConfig) -> None:
        if cfg.credentials_error:
            # Nothing to log in with: stay disconnected (statuses() says why), never try.
            log.warning("event=pool_not_connecting server=%s reason=credentials_unreadable", cfg.id)
            return
        conn = PoolConnection(cfg, self.store, self.options)
        self._connections[cfg.id] = conn
        conn.start()
        log.info("event=pool_connecting server=%s url=%s", cfg.id, cfg.url)

    async def _disconnect(self, server_id: str) -> None:
        conn = self._connections.pop(server_id, None)
        if conn is not None:
            await conn.aclose()
            conn.cache.clear()
            log.info("event=pool_disconnected server=%s", server_id)
