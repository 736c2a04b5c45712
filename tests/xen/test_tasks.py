"""call / call_async and XAPI economy, counted by the simulator."""

from __future__ import annotations

import asyncio

import pytest

from tests.xen.helpers import eventually, pool_config
from xen.errors import TaskCancelled, XapiError
from xen.pools import PoolManager
from xen.store import ObjectStore

pytestmark = pytest.mark.timeout(60)


async def connect(sim, pools: PoolManager, name: str = "Pool A"):
    cfg = pool_config(sim.manifest(), name)
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    return conn


def nonzero(stats: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in stats.items() if v}


async def test_idle_pool_costs_only_event_from(sim, pools: PoolManager) -> None:
    await connect(sim, pools)
    simpool = sim.pool("Pool A")
    await asyncio.sleep(0.2)
    simpool.reset_stats()
    await asyncio.sleep(2.5)  # FAST.event_timeout = 1 s: two or three long-polls
    stats = nonzero(simpool.stats())
    assert set(stats) == {"event.from"}, stats
    assert 1 <= stats["event.from"] <= 4


async def test_call_errors_carry_xapi_code(sim, pools: PoolManager) -> None:
    conn = await connect(sim, pools)
    with pytest.raises(XapiError) as info:
        await conn.call("VM.get_record", "OpaqueRef:does-not-exist")
    assert info.value.code == "HANDLE_INVALID"
    assert info.value.params == ["VM", "OpaqueRef:does-not-exist"]
    # int64 params go as strings: memory sizes above 2^31 work.
    db = sim.pool("Pool A").db
    vm_ref = db.find_one("VM", power_state="Halted", is_a_template=False)
    await conn.call("VM.set_user_version", vm_ref, 2**40)
    assert db.get("VM", vm_ref)["user_version"] == 2**40
    with pytest.raises(TypeError):
        await conn.call("VM.set_name_label", vm_ref, None)


async def test_call_async_waits_through_events_only(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    conn = await connect(sim, pools)
    simpool = sim.pool("Pool A")
    db = simpool.db
    vm_ref = db.find_one("VM", name_label="web-01")
    vm_id = db.get("VM", vm_ref)["uuid"]
    current = db.get("VM", vm_ref)["resident_on"]
    target = next(h for h in db.all_refs("host") if h != current)
    await conn.call("pool.get_all")  # warm a worker session
    simpool.reset_stats()

    seen_tasks: list[dict] = []
    store.subscribe(
        lambda ch: seen_tasks.extend(o for o in ch.enter.values() if o["type"] == "task")
    )
    result = await conn.call_async("VM.pool_migrate", vm_ref, target, {"live": "true"})
    assert result is None  # void
    stats = nonzero(simpool.stats())
    stats.pop("event.from", None)
    stats.pop("session.login_with_password", None)  # only if another worker thread started
    assert stats == {"Async.VM.pool_migrate": 1, "task.destroy": 1}, stats
    # The VM shows up on its new host, and the task came and went in the store.
    target_id = db.get("host", target)["uuid"]
    await eventually(lambda: store.get(vm_id)["$container"] == target_id, 2, "$container")
    assert any(t["name_label"] == "Async.VM.pool_migrate" for t in seen_tasks)
    await eventually(
        lambda: not [t for t in store.by_type("task") if t["status"] != "pending"], 2, "gone"
    )


async def test_call_async_failure_raises_with_task(sim, pools: PoolManager) -> None:
    conn = await connect(sim, pools)
    db = sim.pool("Pool A").db
    vm_ref = db.find_one("VM", name_label="app-01")  # local disk: pool_migrate refuses
    current = db.get("VM", vm_ref)["resident_on"]
    target = next(h for h in db.all_refs("host") if h != current)
    with pytest.raises(XapiError) as info:
        await conn.call_async("VM.pool_migrate", vm_ref, target, {"live": "true"})
    assert info.value.code == "VM_REQUIRES_SR"
    assert info.value.task is not None and info.value.task["status"] == "failure"
    assert info.value.task["type"] == "task"
    # The task was destroyed.
    task_ref = info.value.task["_xapiRef"]
    await eventually(lambda: not db.exists("task", task_ref), 2, "task destroyed")


async def test_cancelling_the_caller_cancels_the_task(sim, pools: PoolManager) -> None:
    sim.timing.time_scale = 0.05  # a migration of a few real seconds, to cancel in flight
    conn = await connect(sim, pools)
    simpool = sim.pool("Pool A")
    db = simpool.db
    vm_ref = db.find_one("VM", name_label="web-01")
    current = db.get("VM", vm_ref)["resident_on"]
    target = next(h for h in db.all_refs("host") if h != current)
    simpool.reset_stats()
    job = asyncio.create_task(conn.call_async("VM.pool_migrate", vm_ref, target, {"live": "true"}))
    await eventually(lambda: db.all_refs("task"), 5, "task started")
    await asyncio.sleep(0.1)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    stats = simpool.stats()
    assert stats.get("task.cancel") == 1
    assert stats.get("task.destroy") == 1
    await eventually(lambda: not db.all_refs("task"), 3, "task destroyed")
    assert db.get("VM", vm_ref)["resident_on"] == current  # the migration was rolled back


async def test_task_cancelled_elsewhere_raises_task_cancelled(sim, pools: PoolManager) -> None:
    sim.timing.time_scale = 0.05  # a migration of a few real seconds, to cancel in flight
    conn = await connect(sim, pools)
    db = sim.pool("Pool A").db
    vm_ref = db.find_one("VM", name_label="web-01")
    current = db.get("VM", vm_ref)["resident_on"]
    target = next(h for h in db.all_refs("host") if h != current)
    job = asyncio.create_task(conn.call_async("VM.pool_migrate", vm_ref, target, {"live": "true"}))
    task_ref = await eventually(lambda: db.all_refs("task"), 5, "task started")
    await asyncio.sleep(0.1)
    await conn.call("task.cancel", task_ref[0])  # e.g. xo-server's task.cancel
    with pytest.raises(TaskCancelled) as info:
        await job
    assert info.value.task is not None and info.value.task["status"] == "cancelled"
    assert db.get("VM", vm_ref)["resident_on"] == current
    await eventually(lambda: not db.all_refs("task"), 3, "task destroyed")


async def test_task_destroyed_before_completion(sim, pools: PoolManager) -> None:
    sim.timing.time_scale = 0.05
    conn = await connect(sim, pools)
    simpool = sim.pool("Pool A")
    db = simpool.db
    vm_ref = db.find_one("VM", name_label="web-01")
    current = db.get("VM", vm_ref)["resident_on"]
    target = next(h for h in db.all_refs("host") if h != current)
    job = asyncio.create_task(conn.call_async("VM.pool_migrate", vm_ref, target, {"live": "true"}))
    task_refs = await eventually(lambda: db.all_refs("task"), 5, "task started")
    await asyncio.sleep(0.1)
    simpool.reset_stats()
    db.delete("task", task_refs[0])  # gone (GC, another client) while still pending
    with pytest.raises(XapiError) as info:
        await job
    assert info.value.code == "TASK_DESTROYED"
    # Exactly one direct look at the task settled it.
    assert simpool.stats().get("task.get_record") == 1


async def test_initial_sync_cost_and_logout(sim, pools: PoolManager) -> None:
    simpool = sim.pool("Pool B")
    simpool.reset_stats()
    cfg = pool_config(sim.manifest(), "Pool B")
    await pools.add(cfg)
    await pools.connection(cfg.id).wait_ready(15)
    stats = nonzero(simpool.stats())
    # One login and one event.from("") fill the cache (the next long-poll may have started).
    assert stats.pop("session.login_with_password") == 1
    assert 1 <= stats.pop("event.from") <= 2
    assert stats == {}
    await pools.connection(cfg.id).call("pool.get_all")  # a worker session
    await pools.remove(cfg.id)
    stats = simpool.stats()
    assert stats["session.logout"] == stats["session.login_with_password"] == 2
