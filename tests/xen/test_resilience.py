"""Master failover, session expiry, outages and wrong credentials, against the simulator."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.xen.helpers import (
    converged,
    eventually,
    host_url,
    master_name,
    pool_config,
    pool_manifest,
    pool_objects,
)
from xen.config import PoolConfig
from xen.pools import PoolManager
from xen.store import ObjectStore

pytestmark = pytest.mark.timeout(60)


async def test_connecting_to_a_slave_follows_to_the_master(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    manifest = sim.manifest()
    pool = pool_manifest(manifest, "Pool A")
    slave = next(h["name"] for h in pool["hosts"] if h["name"] != master_name(pool))
    cfg = pool_config(manifest, "Pool A", host=slave)
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    assert conn.master_url == host_url(manifest, pool)
    assert pools.statuses()[0]["host"] == cfg.url  # the configured URL is kept
    assert await conn.call("pool.get_all")


async def test_master_failover_host_is_slave(sim, pools: PoolManager, store: ObjectStore) -> None:
    manifest = sim.manifest()
    pool = pool_manifest(manifest, "Pool A")
    cfg = pool_config(manifest, "Pool A")
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    simpool = sim.pool("Pool A")
    new_master = next(h["name"] for h in pool["hosts"] if h["name"] != master_name(pool))

    simpool.failover(new_master)
    new_url = host_url(manifest, pool, new_master)
    await eventually(
        lambda: conn.master_url == new_url and conn.status == "connected", 10, "failover"
    )
    # Calls go to the new master, and the cache is complete (and shows the new master).
    assert await conn.call("pool.get_all")
    await converged(sim, store, "Pool A")
    pool_obj = store.get(simpool.uuid)
    assert store.get(pool_obj["master"])["address"] == new_url.split("//")[1].split(":")[0]


async def test_master_stops_answering(sim, pools: PoolManager, store: ObjectStore) -> None:
    manifest = sim.manifest()
    pool = pool_manifest(manifest, "Pool A")
    cfg = pool_config(manifest, "Pool A")
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    simpool = sim.pool("Pool A")
    new_master = pool["hosts"][-1]["name"]
    assert new_master != master_name(pool)

    # The master dies: another host takes over and the old address refuses connections.
    simpool.failover(new_master)
    simpool.set_host_offline(master_name(pool), True)
    new_url = host_url(manifest, pool, new_master)
    await eventually(
        lambda: conn.master_url == new_url and conn.status == "connected", 10, "failover"
    )
    assert await conn.call("pool.get_all")
    await converged(sim, store, "Pool A")


async def test_session_expiry_relogs_in_silently(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    manifest = sim.manifest()
    cfg = pool_config(manifest, "Pool B")
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    simpool = sim.pool("Pool B")
    assert await conn.call("pool.get_all")  # a worker session exists too
    simpool.reset_stats()

    simpool.expire_sessions()
    # Both the worker session and the event session hit SESSION_INVALID and log in again.
    assert await conn.call("pool.get_all")
    db = simpool.db
    vm_ref = db.find_one("VM", is_control_domain=False, is_a_template=False)
    db.update("VM", vm_ref, name_label="after expiry")
    vm_id = db.get("VM", vm_ref)["uuid"]
    await eventually(lambda: store.get(vm_id)["name_label"] == "after expiry", 4, "event stream")
    assert conn.status == "connected" and conn.last_error is None
    assert simpool.stats().get("session.login_with_password", 0) >= 2


@pytest.mark.timeout(60)
async def test_pool_down_then_up_resyncs(sim, pools: PoolManager, store: ObjectStore) -> None:
    manifest = sim.manifest()
    cfg = pool_config(manifest, "Pool A")
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    simpool = sim.pool("Pool A")
    db = simpool.db
    before = len(pool_objects(store, simpool.uuid))

    simpool.set_reachable(False)
    await eventually(lambda: conn.status != "connected", 10, "outage noticed")
    assert conn.last_error
    # Objects stay visible (stale) while the pool is unreachable.
    assert len(pool_objects(store, simpool.uuid)) == before

    # Meanwhile: a VIF is deleted, a network is created, a VM is renamed.
    vif_ref = db.all_refs("VIF")[0]
    vif_id = db.get("VIF", vif_ref)["uuid"]
    db.delete("VIF", vif_ref)
    net_ref = db.create("network", name_label="created while down", bridge="xenbr7")
    net_id = db.get("network", net_ref)["uuid"]
    vm_ref = db.find_one("VM", name_label="web-02")
    db.update("VM", vm_ref, name_label="web-02 renamed while down")
    await asyncio.sleep(0.3)  # a few reconnect attempts fail
    assert net_id not in store

    simpool.set_reachable(True)
    await conn.wait_ready(15)
    actual = pool_objects(store, simpool.uuid)
    assert vif_id not in actual
    assert net_id in actual
    assert actual[db.get("VM", vm_ref)["uuid"]]["name_label"] == "web-02 renamed while down"
    assert len(actual) == before  # -1 VIF +1 network, nothing duplicated
    assert await converged(sim, store, "Pool A") == actual
    assert conn.last_error is None


async def test_wrong_credentials_bounded_retries(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    manifest = sim.manifest()
    bad = pool_config(manifest, "Pool A", password="not the password")
    good = pool_config(manifest, "Pool B")
    simpool = sim.pool("Pool A")
    simpool.reset_stats()
    await pools.add(bad)
    await pools.add(good)
    # A pool with bad credentials does not hold up the others.
    await pools.connection(good.id).wait_ready(15)

    def bad_status() -> dict:
        return next(s for s in pools.statuses() if s["id"] == bad.id)

    await eventually(lambda: "error" in bad_status(), 10, "auth error visible")
    assert "SESSION_AUTHENTICATION_FAILED" in bad_status()["error"]
    # FAST: 3 attempts 0.3 s apart, then it gives up; wait well past that.
    await eventually(lambda: "gave up" in bad_status()["error"], 10, "gave up")
    assert bad_status()["status"] == "disconnected"
    logins = simpool.stats().get("session.login_with_password", 0)
    await asyncio.sleep(1.0)
    assert simpool.stats().get("session.login_with_password", 0) == logins == 3
    assert bad_status()["status"] == "disconnected"
    assert pool_objects(store, simpool.uuid) == {}


async def test_dead_and_silent_pools_do_not_delay_others(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    manifest = sim.manifest()
    # A host that accepts TCP connections but never answers, and one that refuses them.
    silent = socket.socket()
    silent.bind(("127.0.9.1", 0))
    silent.listen(16)
    silent_cfg = PoolConfig(
        id="silent", url=f"http://127.0.9.1:{silent.getsockname()[1]}/", username="root"
    )
    dead_cfg = PoolConfig(id="dead", url=f"http://127.0.9.2:{manifest['port']}/", username="root")
    loop = asyncio.get_running_loop()
    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lag = max(lag, loop.time() - before - 0.01)

    tick = asyncio.create_task(ticker())
    try:
        started = loop.time()
        for cfg in (silent_cfg, dead_cfg):
            await pools.add(cfg)
        good = [pool_config(manifest, p["name"]) for p in manifest["pools"]]
        for cfg in good:
            await pools.add(cfg)
        # add() never waits for the network (the silent host would hold it for minutes); the
        # bounds leave room for a loaded CI machine.
        assert loop.time() - started < 1.0
        for cfg in good:
            await pools.connection(cfg.id).wait_ready(5)
        assert loop.time() - started < 3
        statuses = {s["id"]: s for s in pools.statuses()}
        assert statuses["silent"]["status"] == "connecting"
        await eventually(lambda: pools.connection("dead").last_error, 3, "dead pool error")
        assert "refused" in pools.connection("dead").last_error.lower()
        assert pools.connection("dead").status == "connecting"
        # Removing a pool whose login hangs does not hang either.
        before = loop.time()
        await pools.remove("silent")
        assert loop.time() - before < 1.0
    finally:
        tick.cancel()
        silent.close()
    assert lag < 1.0, f"event loop blocked for {lag:.3f}s"
