"""Fixtures: the simulated lab, the server connected to both of its pools, a signed-in client
that speaks like xo-cli, and name -> id lookups over xo.getAllObjects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server.config import manifest_pool_config
from server.migrations.service import MigrationSettings
from tests.helpers import wait_until
from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.xo_client import RpcError, XoClient
from xen.config import PoolConfig
from xen.sim import Simulator


@dataclass
class Lab:
    sim: Simulator
    server: RunningServer
    client: XoClient
    clients: list[XoClient] = field(default_factory=list)

    async def objects(self, **flt: Any) -> dict[str, Any]:
        return await self.client.call("xo.getAllObjects", {"filter": flt})

    async def id_of(self, xo_type: str, name: str) -> str:
        found = [
            o["id"]
            for o in (await self.objects(type=xo_type)).values()
            if o.get("name_label") == name
        ]
        assert len(found) == 1, (xo_type, name, found)
        return found[0]

    async def get(self, obj_id: str) -> dict[str, Any]:
        objects = await self.client.call("xo.getAllObjects", {"filter": {"id": obj_id}})
        return objects[obj_id]

    async def connect(self) -> XoClient:
        client = await XoClient.connect(self.server.ws_url)
        await client.sign_in()
        self.clients.append(client)
        return client

    async def migrate(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        return await self.client.call(method, params, timeout=timeout)

    async def error_of(
        self, method: str, params: dict[str, Any], timeout: float = 60
    ) -> dict[str, Any]:
        with pytest.raises(RpcError) as info:
            await self.client.call(method, params, timeout=timeout)
        return info.value.error


def pool_configs(manifest: dict[str, Any]) -> list[PoolConfig]:
    return [manifest_pool_config(p) for p in manifest["pools"]]


# Every test here runs on SQLite and on Redis (tests/conftest.py: storage_backend).
@pytest.fixture(autouse=True)
def _each_store(storage_backend: str) -> str:
    return storage_backend


@pytest.fixture
def migration_settings() -> MigrationSettings:
    return MigrationSettings(retry_delay_s=0.2, cancel_wait_s=10.0)


@contextlib.asynccontextmanager
async def lab_on(
    sim: Simulator, tmp_path: Path, settings: MigrationSettings, **config: Any
) -> AsyncIterator[Lab]:
    """The server on `sim`'s pools, with a signed-in client, once every pool is connected;
    `config` sets other ServerConfig fields (e.g. `mounts`)."""
    server_config = make_config(
        tmp_path, pools=pool_configs(sim.manifest()), migration=settings, **config
    )
    async with running_server(server_config) as srv:
        client = await XoClient.connect(srv.ws_url)
        await client.sign_in()
        lab = Lab(sim, srv, client)
        expected = len(sim.manifest()["pools"])

        async def all_connected() -> bool:
            servers = await client.call("server.getAll")
            return len(servers) == expected and all(s["status"] == "connected" for s in servers)

        await wait_until(all_connected)
        try:
            yield lab
        finally:
            for c in [client, *lab.clients]:
                await c.close()


@pytest.fixture
async def lab(
    tmp_path: Path, sim: Simulator, migration_settings: MigrationSettings
) -> AsyncIterator[Lab]:
    async with lab_on(sim, tmp_path, migration_settings) as running:
        yield running
