"""Shared helpers for the xen client tests (real simulator, real sockets)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from xen.config import PoolConfig
from xen.pool import ConnectionOptions
from xen.store import ObjectStore

# Fast reconnects and short long-polls so that every scenario settles in a few seconds.
FAST = ConnectionOptions(
    workers=3,
    event_timeout=1.0,
    socket_margin=5.0,
    call_timeout=30.0,
    backoff_initial=0.05,
    backoff_max=0.4,
    auth_retry_interval=0.3,
    auth_max_attempts=3,
    call_wait=5.0,
    cancel_grace=3.0,
    close_timeout=2.0,
)


def pool_manifest(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in manifest["pools"] if p["name"] == name)


def master_name(pool: dict[str, Any]) -> str:
    """The manifest gives the master as a URL; the name of the host behind it."""
    address = pool["master"].split("//", 1)[1].rsplit(":", 1)[0]
    return next(h["name"] for h in pool["hosts"] if h["address"] == address)


def host_url(manifest: dict[str, Any], pool: dict[str, Any], host_name: str | None = None) -> str:
    if host_name is None:
        return pool["master"]
    host = next(h for h in pool["hosts"] if h["name"] == host_name)
    return f"http://{host['address']}:{manifest['port']}/"


def pool_config(
    manifest: dict[str, Any],
    name: str,
    *,
    host: str | None = None,
    password: str | None = None,
) -> PoolConfig:
    pool = pool_manifest(manifest, name)
    return PoolConfig(
        id=str(uuid.uuid4()),
        url=host_url(manifest, pool, host),
        username=pool["username"],
        password=pool["password"] if password is None else password,
        label=name,
    )


def sim_stats(manifest: dict[str, Any], pool_name: str) -> dict[str, int]:
    """Per-method counters over HTTP, as an operator would read them."""
    url = host_url(manifest, pool_manifest(manifest, pool_name)).rstrip("/") + "/sim/stats"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


async def eventually(
    predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def pool_objects(store: ObjectStore, pool_uuid: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in store if o.get("$pool") == pool_uuid}


async def fresh_objects(sim: Any, pool_name: str) -> dict[str, dict[str, Any]]:
    """The objects a new connection's initial sync gives for one simulated pool: what the
    live cache must converge to after incremental changes (the same tables, reached through
    a full snapshot instead of event by event)."""
    from xen.pools import PoolManager

    store = ObjectStore()
    manager = PoolManager(store, FAST)
    await manager.start()
    try:
        cfg = pool_config(sim.manifest(), pool_name)
        await manager.add(cfg)
        conn = manager.connection(cfg.id)
        assert conn is not None
        await conn.wait_ready(15)
        return pool_objects(store, sim.pool(pool_name).uuid)
    finally:
        await manager.aclose()


async def converged(
    sim: Any, store: ObjectStore, pool_name: str, timeout: float = 5.0
) -> dict[str, dict[str, Any]]:
    """Wait until the live cache of `pool_name` equals a fresh sync of it; its objects."""
    deadline = asyncio.get_running_loop().time() + timeout
    pool_uuid = sim.pool(pool_name).uuid
    while True:
        expected = await fresh_objects(sim, pool_name)
        actual = pool_objects(store, pool_uuid)
        problems = mismatches(expected, actual)
        if not problems:
            return actual
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the cache of {pool_name} differs from a fresh sync: {problems}")
        await asyncio.sleep(0.1)


def mismatches(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list:
    """(id, field, expected, actual) for every expected field that differs; missing/extra ids."""
    problems: list[tuple[str, str, Any, Any]] = []
    for obj_id, exp in expected.items():
        got = actual.get(obj_id)
        if got is None:
            problems.append((obj_id, "<missing>", exp.get("type"), None))
            continue
        for key, value in exp.items():
            if got.get(key, "<absent>") != value:
                problems.append((obj_id, key, value, got.get(key, "<absent>")))
    for obj_id in actual.keys() - expected.keys():
        problems.append((obj_id, "<unexpected>", None, actual[obj_id].get("type")))
    for obj_id in expected.keys() & actual.keys():
        for key in actual[obj_id].keys() - expected[obj_id].keys():
            problems.append((obj_id, key, "<absent>", actual[obj_id][key]))
    return problems
