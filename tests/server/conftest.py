"""Fixtures: the server in-process on an ephemeral loopback port, with a temporary data dir."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from server.app import GUARD, STATE, build_app
from server.auth import AuthSettings
from server.config import ServerConfig
from server.guard import GuardedSite, make_runner
from server.state import ServerState
from server.storage import DatabaseSettings
from tests.server.xo_client import XoClient
from tests.storage import database_url


@dataclass
class RunningServer:
    app: web.Application
    port: int
    scheme: str = "http"

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/api/"


# Tests hash passwords at the old, cheaper scrypt cost (N=2^14): the production default
# (N=2^17) costs most of a second per sign-in; tests/server/test_hardening.py checks it.
TEST_SCRYPT_N = 2**14
# Short leases on Redis: a restarted server adopts its migrations soon.
LEASE_TTL_S = 2.0


def make_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    cfg = ServerConfig(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        auth=AuthSettings(throttling_delay_s=0.3, scrypt_n=TEST_SCRYPT_N),
    )
    cfg.database = DatabaseSettings(url=database_url(data_dir), lease_ttl_s=LEASE_TTL_S)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


# Every test here runs on SQLite and on Redis (tests/conftest.py: storage_backend), but for
# modules marked `sqlite_only`.
@pytest.fixture(autouse=True)
def _each_store(storage_backend: str) -> str:
    return storage_backend


@contextlib.asynccontextmanager
async def running_server(
    config: ServerConfig, ssl_context: Any = None
) -> AsyncIterator[RunningServer]:
    app = build_app(config)
    runner = make_runner(app, config.connections, access_log=None, shutdown_timeout=2)
    await runner.setup()
    try:
        # As `xo-migrate serve`: behind the connection guard.
        site = GuardedSite(runner, "127.0.0.1", 0, guard=app[GUARD], ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        yield RunningServer(app, port, "https" if ssl_context else "http")
    finally:
        await runner.cleanup()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(make_config(tmp_path)) as srv:
        yield srv


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Callable[..., Any]]:
    """Open xo-lib-like clients to the `server` fixture; all closed at teardown."""
    clients: list[XoClient] = []

    async def open_client(signed_in: bool = False) -> XoClient:
        client = await XoClient.connect(server.ws_url)
        clients.append(client)
        if signed_in:
            await client.sign_in()
        return client

    yield open_client
    for client in clients:
        await client.close()
