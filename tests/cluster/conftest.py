"""Fixtures: xo-migrate instances as real `xo-migrate serve` processes sharing one real
redis-server, on the simulated pools (in this process), each on its own loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import serve_toml, wait_until
from tests.redis_server import REDIS_MISSING, redis_server
from tests.server.serve_process import free_port, spawn_serve, wait_listening
from tests.server.xo_client import XoClient
from xen.sim import Simulator

LEASE_TTL_S = 2.0


@pytest.fixture
def redis() -> Iterator[str]:
    """A redis-server of this test's own (the instances' cluster)."""
    if REDIS_MISSING is not None:
        pytest.skip(REDIS_MISSING)
    with redis_server() as url:
        yield url


@dataclass
class Instance:
    proc: asyncio.subprocess.Process
    port: int
    clients: list[XoClient] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/"

    async def client(self, token: str | None = None) -> XoClient:
        """A client signed in as admin (or with `token`)."""
        client = await XoClient.connect(self.ws_url)
        if token is None:
            await client.sign_in()
        else:
            await client.call("session.signIn", {"token": token})
        self.clients.append(client)
        return client

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)


def config_text(sim: Simulator, data_dir: Path, port: int, redis: str, **migration: Any) -> str:
    return serve_toml(
        sim.manifest(),
        data_dir,
        port,
        "[database]",
        f'url = "{redis}"',
        f'lease_ttl = "{LEASE_TTL_S} seconds"',
        "[migration]",
        'retry_delay = "200 ms"',
        *(f"{key} = {value}" for key, value in migration.items()),
    )


Launch = Callable[..., Any]


@pytest.fixture
async def instances(
    sim: Simulator, redis: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """`await instances(n, **migration_settings)`: n instances, every pool connected on each.
    They share the data dir (on one machine it holds only secret.key)."""
    running: list[Instance] = []

    async def launch(count: int, **migration: Any) -> list[Instance]:
        started = []
        for _ in range(count):
            port = free_port()
            config = tmp_path / f"instance-{port}.toml"
            config.write_text(config_text(sim, tmp_path / "data", port, redis, **migration))
            proc = await spawn_serve(config, stderr=asyncio.subprocess.DEVNULL)
            instance = Instance(proc, port)
            running.append(instance)
            assert await wait_listening(proc) is not None, "the instance did not start"
            started.append(instance)
        for instance in started:
            await all_connected(instance, len(sim.manifest()["pools"]))
        return started

    try:
        yield launch
    finally:
        for instance in running:
            for client in instance.clients:
                await client.close()
            if instance.proc.returncode is None:
                instance.proc.send_signal(signal.SIGINT)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(instance.proc.wait(), 15)
            if instance.proc.returncode is None:
                instance.proc.kill()
                await instance.proc.wait()


async def all_connected(instance: Instance, pools: int) -> None:
    client = await instance.client()

    async def connected() -> bool:
        servers = await client.call("server.getAll")
        return len(servers) == pools and all(s["status"] == "connected" for s in servers)

    await wait_until(connected, timeout=30)


async def ids_by_name(client: XoClient) -> dict[str, str]:
    objects: dict[str, Any] = await client.call("xo.getAllObjects")
    return {o["name_label"]: o["id"] for o in objects.values() if o.get("name_label")}
