"""Initial sync and live changes: the cache mirrors the simulator in xo-server's shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.xen.helpers import (
    eventually,
    expected_objects,
    mismatches,
    pool_config,
    pool_objects,
)
from xen.pools import PoolManager
from xen.store import ObjectStore

pytestmark = pytest.mark.timeout(60)


async def connect(sim, pools: PoolManager, name: str):
    cfg = pool_config(sim.manifest(), name)
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    assert conn is not None
    await conn.wait_ready(15)
    return cfg, conn


async def test_initial_sync_equals_simulator(sim, pools: PoolManager, store: ObjectStore) -> None:
    manifest = sim.manifest()
    configs = [pool_config(manifest, p["name"]) for p in manifest["pools"]]
    for cfg in configs:
        await pools.add(cfg)  # returns at once; both pools connect concurrently
    for cfg in configs:
        await pools.connection(cfg.id).wait_ready(15)

    for pool in manifest["pools"]:
        simpool = sim.pool(pool["name"])
        expected = expected_objects(simpool.db)
        assert len(expected) > 20
        assert mismatches(expected, pool_objects(store, simpool.uuid)) == []

    statuses = {s["id"]: s for s in pools.statuses()}
    for cfg, pool in zip(configs, manifest["pools"], strict=True):
        status = statuses[cfg.id]
        assert status["status"] == "connected"
        assert status["poolId"] == pool["uuid"]
        assert status["host"] == cfg.url and status["username"] == cfg.username
        assert "error" not in status
        assert pools.connection_for_pool(pool["uuid"]) is pools.connection(cfg.id)


async def test_xo_shape_of_key_objects(sim, pools: PoolManager, store: ObjectStore) -> None:
    _, conn = await connect(sim, pools, "Pool A")
    db = sim.pool("Pool A").db
    pool_uuid = conn.pool_id
    vm_ref = db.find_one("VM", name_label="web-01")
    vm = store.by_ref(pool_uuid, vm_ref)
    assert vm is not None and vm["type"] == "VM"
    assert store.id_of_ref(pool_uuid, vm_ref) == vm["id"] == db.get("VM", vm_ref)["uuid"]
    host_uuid = db.get("host", db.get("VM", vm_ref)["resident_on"])["uuid"]
    assert vm["$container"] == host_uuid and store.get(host_uuid)["type"] == "host"
    assert isinstance(vm["memory_static_max"], int) and vm["memory_static_max"] >= 2**31
    assert len(vm["$VBDs"]) >= 1 and all(store.get(i)["type"] == "VBD" for i in vm["$VBDs"])
    assert vm["VIFs"] and all(store.get(i)["type"] == "VIF" for i in vm["VIFs"])
    vbd = store.get(vm["$VBDs"][0])
    assert vbd["VM"] == vm["id"]
    if vbd["VDI"] is not None:
        vdi = store.get(vbd["VDI"])
        assert vdi["type"] == "VDI" and store.get(vdi["$SR"])["type"] == "SR"
    halted_ref = db.find_one("VM", power_state="Halted", is_a_template=False)
    halted = store.by_ref(pool_uuid, halted_ref)
    assert halted["$container"] == pool_uuid
    assert store.by_type("VM-controller"), "dom0 of each host is a VM-controller"
    assert store.by_type("VM-snapshot"), "the lab has snapshots"
    pool = store.get(pool_uuid)
    assert pool["type"] == "pool" and store.get(pool["master"])["type"] == "host"


async def test_change_shows_up_promptly(sim, pools: PoolManager, store: ObjectStore) -> None:
    _, conn = await connect(sim, pools, "Pool A")
    db = sim.pool("Pool A").db
    pool_uuid = conn.pool_id
    vm_ref = db.find_one("VM", name_label="web-01")
    vm_id = db.get("VM", vm_ref)["uuid"]

    db.update("VM", vm_ref, name_label="web-01 renamed")
    await eventually(lambda: store.get(vm_id)["name_label"] == "web-01 renamed", 2, "rename")

    # The VM "moves" to another host: its $container follows.
    current = db.get("VM", vm_ref)["resident_on"]
    other = next(h for h in db.all_refs("host") if h != current)
    db.update("VM", vm_ref, resident_on=other)
    other_id = db.get("host", other)["uuid"]
    await eventually(lambda: store.get(vm_id)["$container"] == other_id, 2, "$container")

    # Task progress, then completion, then removal.
    task_ref = db.create(
        "task",
        name_label="Async.VM.pool_migrate",
        status="pending",
        created=datetime.now(UTC).replace(microsecond=0),
    )
    task_id = db.get("task", task_ref)["uuid"]
    await eventually(lambda: store.get(task_id), 2, "task enters")
    task = store.get(task_id)
    assert task["type"] == "task" and task["status"] == "pending" and task["finished"] is None
    assert isinstance(task["created"], int) and task["created"] > 1_600_000_000
    db.update("task", task_ref, progress=0.42)
    await eventually(lambda: store.get(task_id)["progress"] == 0.42, 2, "progress")
    db.delete("task", task_ref)
    await eventually(lambda: task_id not in store, 2, "task exits")
    assert store.by_ref(pool_uuid, task_ref) is None

    # Whole objects come and go.
    net_ref = db.create("network", name_label="new net", bridge="xenbr9")
    net_id = db.get("network", net_ref)["uuid"]
    await eventually(lambda: net_id in store, 2, "network enters")
    db.delete("network", net_ref)
    await eventually(lambda: net_id not in store, 2, "network exits")
    assert mismatches(expected_objects(db), pool_objects(store, pool_uuid)) == []


async def test_disable_withdraws_objects_enable_restores(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    cfg, conn = await connect(sim, pools, "Pool B")
    pool_uuid = conn.pool_id
    count = len(pool_objects(store, pool_uuid))
    exits: set[str] = set()
    store.subscribe(lambda changes: exits.update(changes.exit))

    await pools.disable(cfg.id)
    assert pool_objects(store, pool_uuid) == {}
    status = pools.statuses()[0]
    assert status["status"] == "disconnected" and status["enabled"] is False
    store.flush()
    assert len(exits) == count

    await pools.enable(cfg.id)
    await pools.connection(cfg.id).wait_ready(15)
    assert len(pool_objects(store, pool_uuid)) == count

    await pools.remove(cfg.id)
    assert pool_objects(store, pool_uuid) == {}
    assert pools.statuses() == []
