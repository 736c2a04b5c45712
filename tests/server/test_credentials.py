"""Pool passwords at rest: encrypted in SQLite with a key derived from `secret.key`; clear rows
of older versions migrated on start; a lost or replaced key leaves the pool disconnected with
an explicit error until `server.set` gives the password again. Against the XAPI simulator."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.db import SCHEMA
from tests.conftest import SIM_TIME_SCALE
from tests.helpers import stored_bytes, wait_until
from tests.server.conftest import make_config, running_server
from tests.server.test_servers import status_of
from tests.server.xo_client import XoClient
from xen.sim import Simulator, load_lab

pytestmark = pytest.mark.timeout(60)

# A password that appears nowhere else (not even as a column name), so any copy is found.
PASSWORD = f"pool-pw-{secrets.token_hex(8)}"


@pytest.fixture
async def secret_sim() -> AsyncIterator[Simulator]:
    lab = load_lab()
    for pool in lab.pools:
        pool.password = PASSWORD
    simulator = Simulator(lab, port=0, time_scale=SIM_TIME_SCALE)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def pool_a(sim: Simulator) -> dict[str, Any]:
    return sim.manifest()["pools"][0]


def stored_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(data_dir / "xo-migrate.db")
    try:
        return db.execute("SELECT * FROM servers").fetchall()
    finally:
        db.close()


def bytes_on_disk(data_dir: Path) -> bytes:
    """The database file and its WAL/shared-memory files, as a thief would copy them."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("xo-migrate.db*")))


async def signed_in(srv: Any) -> XoClient:
    client = await XoClient.connect(srv.ws_url)
    await client.sign_in()
    return client


async def add_pool(client: XoClient, pool: dict[str, Any]) -> str:
    return await client.call(
        "server.add",
        {
            "label": pool["name"],
            "host": pool["master"],
            "username": pool["username"],
            "password": PASSWORD,
            "allowUnauthorized": True,
        },
    )


async def connected(client: XoClient, server_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        entry = await status_of(client, server_id)
        return entry if entry["status"] == "connected" else None

    return await wait_until(check)


async def test_password_encrypted_at_rest_and_restart_connects(
    tmp_path: Path, secret_sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pool = pool_a(secret_sim)
    async with running_server(make_config(tmp_path)) as srv:
        client = await signed_in(srv)
        server_id = await add_pool(client, pool)
        entry = await connected(client, server_id)
        assert entry["poolId"] == pool["uuid"]
        stored = await stored_bytes(tmp_path)
        assert PASSWORD.encode() not in stored and b"fernet1:" in stored
        await client.close()
    if srv.state.storage.kind == "sqlite":
        assert PASSWORD.encode() not in bytes_on_disk(tmp_path)
    # Restart: the password is decrypted and the pool connects again.
    async with running_server(make_config(tmp_path)) as srv:
        client = await signed_in(srv)
        await connected(client, server_id)
        await client.close()
    assert PASSWORD not in caplog.text


@pytest.mark.sqlite_only
async def test_clear_password_of_an_older_version_is_migrated(
    tmp_path: Path, secret_sim: Simulator
) -> None:
    pool = pool_a(secret_sim)
    server_id = str(uuid.uuid4())
    db = sqlite3.connect(tmp_path / "xo-migrate.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO servers VALUES (?, ?, ?, ?, '', ?, 1, '', 1, 0)",
        (server_id, pool["master"], pool["username"], PASSWORD, pool["name"]),
    )
    db.close()
    assert PASSWORD.encode() in bytes_on_disk(tmp_path)
    async with running_server(make_config(tmp_path)) as srv:
        (row,) = stored_rows(tmp_path)
        assert row[3].startswith("fernet1:") and PASSWORD not in repr(row)
        assert PASSWORD.encode() not in bytes_on_disk(tmp_path)
        client = await signed_in(srv)
        await connected(client, server_id)
        await client.close()


@pytest.mark.sqlite_only  # a cluster refuses to start instead (tests/cluster)
async def test_replaced_secret_key_degrades_until_server_set(
    tmp_path: Path, secret_sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pool = pool_a(secret_sim)
    async with running_server(make_config(tmp_path)) as srv:
        client = await signed_in(srv)
        server_id = await add_pool(client, pool)
        await connected(client, server_id)
        await client.close()
    (before,) = stored_rows(tmp_path)
    (tmp_path / "secret.key").write_bytes(secrets.token_bytes(32))  # key lost and replaced

    simpool = secret_sim.pool("Pool A")
    simpool.reset_stats()
    async with running_server(make_config(tmp_path)) as srv:
        client = await signed_in(srv)
        entry = await status_of(client, server_id)
        assert entry["status"] == "disconnected"
        assert entry["error"].startswith("credential decryption failed")
        assert "server.set" in entry["error"]
        # Other changes, and enabling, keep the pool degraded and the stored value untouched
        # (the old key may come back); no login is ever attempted with a wrong password.
        assert await client.call("server.set", {"id": server_id, "label": "renamed"}) is True
        assert await client.call("server.enable", {"id": server_id}) is True
        await asyncio.sleep(0.3)
        entry = await status_of(client, server_id)
        assert entry["label"] == "renamed" and entry["status"] == "disconnected"
        assert entry["error"].startswith("credential decryption failed")
        (row,) = stored_rows(tmp_path)
        assert row[3] == before[3]
        assert simpool.stats().get("session.login_with_password", 0) == 0
        # Re-entering the password fixes it (encrypted with the new key).
        assert await client.call("server.set", {"id": server_id, "password": PASSWORD}) is True
        entry = await connected(client, server_id)
        assert "error" not in entry
        await client.close()
    (after,) = stored_rows(tmp_path)
    assert after[3].startswith("fernet1:") and after[3] != before[3]
    async with running_server(make_config(tmp_path)) as srv:
        client = await signed_in(srv)
        await connected(client, server_id)
        await client.close()
    assert PASSWORD not in caplog.text
