"""Issue 10, class 6: a migration acknowledged by `migration.start` is in the database before
its id is returned, so a crash right after loses nothing.

Against a real `xo-migrate serve` process on the simulated pools: start migrations, SIGKILL
the server the moment the ids arrive, start it again on the same data dir and find each one.
And in-process, with nothing in between: the row is readable from the database file by
another connection (SQLite file, or Redis) as soon as `start` returns."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from server.migrations.plan import MigrationRequest
from tests.helpers import serve_toml, wait_until
from tests.migrations.conftest import Lab
from tests.server.serve_process import free_port, spawn_serve, wait_listening
from tests.server.xo_client import XoClient
from tests.storage import database_url
from xen.sim import Simulator

pytestmark = pytest.mark.timeout(120)


def config_text(sim: Simulator, data_dir: Path, port: int) -> str:
    url = database_url(data_dir)  # on Redis (storage_backend) or SQLite
    on_redis = ["[database]", f'url = "{url}"', 'lease_ttl = "2 seconds"'] if url else []
    return serve_toml(sim.manifest(), data_dir, port, *on_redis)


async def start_serve(config: Path) -> asyncio.subprocess.Process:
    proc = await spawn_serve(config, stderr=asyncio.subprocess.DEVNULL)
    assert await wait_listening(proc) is not None
    return proc


async def signed_in(port: int, pools: int) -> XoClient:
    client = await XoClient.connect(f"ws://127.0.0.1:{port}/api/")
    await client.sign_in()

    async def connected() -> bool:
        servers = await client.call("server.getAll")
        return len(servers) == pools and all(s["status"] == "connected" for s in servers)

    await wait_until(connected)
    return client


async def test_sigkill_right_after_migration_start_keeps_the_migrations(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.timing.time_scale = 0.05  # slow enough that they are still running when killed
    port = free_port()
    config = tmp_path / "xo.toml"
    config.write_text(config_text(sim, tmp_path / "data", port))
    pools = len(sim.manifest()["pools"])
    proc = await start_serve(config)
    try:
        client = await signed_in(port, pools)
        objects: dict[str, Any] = await client.call("xo.getAllObjects")
        by_name = {o.get("name_label"): o["id"] for o in objects.values()}
        moves = [("web-01", "a2"), ("web-02", "a3"), ("app-01", "a2"), ("b-web-01", "b2")]
        # Pipelined: every frame sent at once, the server killed on the last reply.
        requests = [
            client.request("migration.start", {"vm": by_name[vm], "targetHost": by_name[host]})
            for vm, host in moves
        ]
        replies = await asyncio.gather(*requests)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        ids = [r["result"] for r in replies]
        await client.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    proc = await start_serve(config)
    try:
        client = await signed_in(port, pools)
        for migration_id, (vm, _) in zip(ids, moves, strict=True):
            record = await client.call("migration.get", {"id": migration_id})
            assert record["vm"] == by_name[vm]
        listed = {r["id"] for r in await client.call("migration.getAll")}
        assert set(ids) <= listed
        await client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 20)


async def test_the_record_is_committed_before_start_returns(lab: Lab) -> None:
    service = lab.server.state.services["migrations"]
    vm, host = await lab.id_of("VM", "web-01"), await lab.id_of("host", "a2")
    m = await service.start(
        MigrationRequest(vm=vm, target_host=host),
        method="migration.start",
        user_id=None,
        user_email=None,
    )
    # Read by another connection, as the next process would after a crash right now.
    assert await stored_elsewhere(lab, m.id) == (vm, "running")
    await m.done.wait()


async def stored_elsewhere(lab: Lab, migration_id: str) -> tuple[str, str] | None:
    state = lab.server.state
    if state.storage.kind == "sqlite":
        other = sqlite3.connect(state.config.data_dir / "xo-migrate.db")
        try:
            row = other.execute(
                "SELECT vm, status FROM migrations WHERE id = ?", (migration_id,)
            ).fetchone()
        finally:
            other.close()
        return None if row is None else (row[0], row[1])
    client = aioredis.Redis.from_url(state.config.database.url, decode_responses=True)
    try:
        raw = await client.hget(f"xom:migration:{migration_id}", "record")
    finally:
        await client.aclose()
    record = orjson.loads(raw) if raw else None
    return None if record is None else (record["vm"], record["status"])
