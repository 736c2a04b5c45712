"""The pool connections a migration talks to, found by pool id (uuid)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from server.migrations.settings import MigrationSettings
from xen.errors import PoolUnavailable
from xen.pool import PoolConnection
from xen.pools import PoolManager


class PoolConnections:
    def __init__(self, pools: PoolManager | None, settings: MigrationSettings) -> None:
        self._pools = pools
        self._settings = settings

    def connection(self, pool_id: str) -> PoolConnection:
        """The pool's connection, whatever its state; PoolUnavailable if there is none."""
        conn = self._pools.connection_for_pool(pool_id) if self._pools is not None else None
        if conn is None:
            raise PoolUnavailable(pool_id, "not connected")
        return conn

    async def ready(self, pool_id: str | None) -> PoolConnection | None:
        """The pool's connection once connected with a complete cache; None if that does not
        happen within `recover_wait_s` (a connection may also appear meanwhile: server.add)."""
        deadline = time.monotonic() + self._settings.recover_wait_s
        while time.monotonic() < deadline:
            conn = self._pools.connection_for_pool(pool_id) if self._pools and pool_id else None
            if conn is not None:
                with contextlib.suppress(PoolUnavailable):
                    await conn.wait_ready(max(0.1, deadline - time.monotonic()))
                    return conn
            await asyncio.sleep(0.5)
        return None

    def pool_id(self, name: str) -> str:
        """A pool uuid for a PoolUnavailable that names its connection's label."""
        connections = self._pools.connections() if self._pools is not None else []
        for conn in connections:
            if conn.pool_id and name in (conn.label, conn.pool_id):
                return str(conn.pool_id)
        return name
