"""Migrations as tasks: progress shape (event.from), cancellation windows, the per-host
storage-migration limit, injected faults with rollback, and the timing model."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.sim.test_migration_support import (
    NULL,
    Xapi,
    disks_of,
    host_ref,
    master,
    memory_free,
    net_ref,
    receive,
    sr_ref,
    vifs_of,
    vm_ref,
)
from xen.sim import Simulator, load_lab
from xen.sim import timing as phases
from xen.sim.pool import SimPool
from xen.sim.registry import Fault


def progress_seen(x: Xapi, task: str) -> list[tuple[str, float]]:
    """(status, progress) of every task event event.from delivers until the task ends."""
    assert x.session is not None
    api = x.session.xenapi
    seen: list[tuple[str, float]] = []
    token = ""
    while not seen or seen[-1][0] == "pending":
        batch = api.event_from([f"task/{task}"], token, 5.0)
        token = batch["token"]
        assert batch["events"], "no task event within 5 s"
        for ev in batch["events"]:
            snap = ev["snapshot"]
            seen.append((snap["status"], float(snap["progress"])))
    return seen


async def test_storage_motion_progress_restarts_for_the_memory_phase(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    pool.event_batch_delay_s = 0.005
    sim.timing.time_scale = 0.008  # app-01: ~137 simulated s, about 1.1 s here
    vm, a3, shared = vm_ref(pool, "app-01"), host_ref(pool, "a3"), sr_ref(pool, "A shared NFS")
    (vdi,) = disks_of(pool, vm)
    async with Xapi(master(sim, "Pool A")) as x, Xapi(master(sim, "Pool A")) as watcher:
        task = await x("Async.VM.migrate_send", vm, {"host": a3}, True, {vdi: shared}, {}, {})
        seen = await asyncio.to_thread(progress_seen, watcher, task)
    assert seen[-1] == ("success", 1.0)
    pending = [p for status, p in seen if status == "pending"]
    assert all(0.0 <= p <= 1.0 for p in pending)
    # The disk copy climbs to (nearly) 1.0, then the memory copy restarts from 0.
    top = next((i for i, p in enumerate(pending) if p >= 0.9), None)
    assert top is not None, pending
    assert any(0.0 < p < 0.9 for p in pending[:top]), pending
    assert min(pending[top:]) < 0.5, pending


async def test_pool_migrate_progress_is_monotonic(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    pool.event_batch_delay_s = 0.005
    sim.timing.time_scale = 0.03  # web-01: ~10 simulated s
    vm = vm_ref(pool, "web-01")
    async with Xapi(master(sim, "Pool A")) as x, Xapi(master(sim, "Pool A")) as watcher:
        task = await x("Async.VM.pool_migrate", vm, host_ref(pool, "a2"), {})
        seen = await asyncio.to_thread(progress_seen, watcher, task)
    assert seen[-1] == ("success", 1.0)
    pending = [p for status, p in seen if status == "pending"]
    assert pending == sorted(pending), pending
    assert any(0.0 < p < phases.MEMORY_PHASE_END for p in pending), pending


def _vdi_state(pool: SimPool) -> tuple[set[str], dict[str, int]]:
    db = pool.db
    return set(db.all_refs("VDI")), {
        ref: rec["physical_utilisation"] for ref, rec in db.iter_records("SR")
    }


async def test_cancel_inside_the_window_rolls_back(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    sim.timing.time_scale = 0.01
    vm, a2, a3 = vm_ref(pool, "app-01"), host_ref(pool, "a2"), host_ref(pool, "a3")
    shared = sr_ref(pool, "A shared NFS")
    (vdi,) = disks_of(pool, vm)
    vdis_before, srs_before = _vdi_state(pool)
    a3_free = memory_free(pool, a3)
    async with Xapi(master(sim, "Pool A")) as x:
        allowed_before = await x("VM.get_allowed_operations", vm)
        task = await x("Async.VM.migrate_send", vm, {"host": a3}, True, {vdi: shared}, {}, {})
        # Mid disk copy: cancellable, the copy exists, memory is reserved on a3.
        rec = await x.wait_until(task, lambda r: r["progress"] > 0.1)
        assert rec["allowed_operations"] == ["cancel"]
        assert len(set(await x("SR.get_VDIs", shared)) - vdis_before) == 1
        assert await x("VM.get_current_operations", vm) == {task: "migrate_send"}
        assert await x("VM.get_scheduled_to_be_resident_on", vm) == a3
        assert await x("host.get_current_operations", a3) == {task: "vm_migrate"}
        assert memory_free(pool, a3) < a3_free
        await x("task.cancel", task)
        rec = await x.wait(task)
        assert rec["status"] == "cancelled" and rec["error_info"] == []
        after = await x("VM.get_record", vm)
        assert after["resident_on"] == a2 and after["power_state"] == "Running"
        assert disks_of(pool, vm) == [vdi]
        assert after["current_operations"] == {} and after["scheduled_to_be_resident_on"] == NULL
        assert sorted(after["allowed_operations"]) == sorted(allowed_before)
        assert await x("host.get_current_operations", a3) == {}
    assert _vdi_state(pool) == (vdis_before, srs_before)
    assert memory_free(pool, a3) == a3_free


async def test_cancel_during_the_memory_copy(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    sim.timing.time_scale = 0.05  # web-01's memory copy: ~8 simulated s
    vm, a1, a2 = vm_ref(pool, "web-01"), host_ref(pool, "a1"), host_ref(pool, "a2")
    async with Xapi(master(sim, "Pool A")) as x:
        task = await x("Async.VM.pool_migrate", vm, a2, {})
        await x.wait_until(task, lambda r: r["progress"] > 0.05)
        await x("task.cancel", task)
        rec = await x.wait(task)
        assert rec["status"] == "cancelled"
        assert await x("VM.get_resident_on", vm) == a1
        assert await x("VM.get_current_operations", vm) == {}


async def test_cancel_outside_the_window_is_ignored(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    sim.timing.finalise_s = 150.0  # 0.3 s at the test scale: a wide non-cancellable window
    vm, a2 = vm_ref(pool, "web-01"), host_ref(pool, "a2")
    async with Xapi(master(sim, "Pool A")) as x:
        task = await x("Async.VM.pool_migrate", vm, a2, {})
        rec = await x.wait_until(task, lambda r: r["progress"] == 1.0)
        assert rec["allowed_operations"] == []  # stop-and-copy is done: no way back
        await x("task.cancel", task)  # accepted, never an error ...
        rec = await x.wait(task)
        assert rec["status"] == "success"  # ... and ignored
        assert await x("VM.get_resident_on", vm) == a2


async def test_a_second_migration_of_the_same_vm_waits_for_the_first(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    sim.timing.time_scale = 0.02  # web-01: ~10 simulated s, 0.2 s here
    vm, a2, a3 = vm_ref(pool, "web-01"), host_ref(pool, "a2"), host_ref(pool, "a3")
    async with Xapi(master(sim, "Pool A")) as x:
        first = await x("Async.VM.pool_migrate", vm, a2, {})
        await x.wait_until(first, lambda r: r["progress"] > 0.0)
        second = await x("Async.VM.pool_migrate", vm, a3, {})
        third = await x("Async.VM.pool_migrate", vm, a2, {})
        waiting = await x("task.get_record", second)
        assert waiting["status"] == "pending" and waiting["allowed_operations"] == ["cancel"]
        assert await x("VM.get_current_operations", vm) == {first: "pool_migrate"}
        await x("task.cancel", third)  # a waiting call can be cancelled
        assert (await x.wait(third))["status"] == "cancelled"
        assert (await x.wait(first))["status"] == "success"
        assert (await x.wait(second))["status"] == "success"
        assert await x("VM.get_resident_on", vm) == a3


async def test_at_most_three_storage_migrations_per_source_host(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    sim.timing.dispatch_s = 25.0  # every migration lasts at least 0.05 s ...
    sim.timing.time_scale = 0.02  # ... well, 0.5 s at this scale
    a2, a3, shared = host_ref(pool, "a2"), host_ref(pool, "a3"), sr_ref(pool, "A shared NFS")
    on_a2 = ["web-02", "runner-01", "runner-03", "app-01"]
    assert all(pool.db.get("VM", vm_ref(pool, n))["resident_on"] == a2 for n in on_a2)

    def args(name: str, dest: str) -> tuple[Any, ...]:
        vm = vm_ref(pool, name)
        return vm, {"host": dest}, True, {d: shared for d in disks_of(pool, vm)}, {}, {}

    async with Xapi(master(sim, "Pool A")) as x:
        tasks = [await x("Async.VM.migrate_send", *args(n, a3)) for n in on_a2]
        # Another source host is not limited by a2's migrations.
        other = await x("Async.VM.migrate_send", *args("runner-02", host_ref(pool, "a1")))
        fourth = await x.wait(tasks[3])
        assert fourth["status"] == "failure"
        assert fourth["error_info"] == ["TOO_MANY_STORAGE_MIGRATES", "3"]
        for task in [*tasks[:3], other]:
            assert (await x.wait(task))["status"] == "success"
        app01 = vm_ref(pool, "app-01")
        assert await x("VM.get_current_operations", app01) == {}
        # Once they are done, the fourth goes through.
        sim.timing.time_scale = 0.002
        task = await x("Async.VM.migrate_send", *args("app-01", a3))
        assert (await x.wait(task))["status"] == "success"
        assert await x("VM.get_resident_on", app01) == a3


@pytest.mark.parametrize("phase", ["dispatch", "disks", "metadata", "memory", "finalise"])
async def test_injected_fault_rolls_back_a_cross_pool_migration(sim: Simulator, phase: str) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    sim.timing.time_scale = 0.001
    vm, a1, b1 = vm_ref(a, "db-01"), host_ref(a, "a1"), host_ref(b, "b1")
    uuid = a.db.get("VM", vm)["uuid"]
    vdis = disks_of(a, vm)
    b_shared = sr_ref(b, "B shared iSCSI")
    a.add_fault(
        Fault(
            "migration",
            vm="db-01",
            phase=phase,
            code="INTERNAL_ERROR",
            params=["xenopsd internal error: simulated"],
        )
    )
    dest = await receive(sim, "Pool B", "b1", "B migration")
    b_state, a_state = _vdi_state(b), _vdi_state(a)
    b1_free, b_vms = memory_free(b, b1), set(b.db.all_refs("VM"))
    async with Xapi(master(sim, "Pool A")) as x, Xapi(master(sim, "Pool B")) as xb:
        task = await x(
            "Async.VM.migrate_send",
            vm,
            dest,
            True,
            {d: b_shared for d in vdis},
            {v: net_ref(b, "B management") for v in vifs_of(a, vm)},
            {},
        )
        rec = await x.wait(task)
        assert rec["status"] == "failure"
        assert rec["error_info"] == ["INTERNAL_ERROR", "xenopsd internal error: simulated"]
        after = await x("VM.get_record", vm)
        assert after["resident_on"] == a1 and after["power_state"] == "Running"
        assert after["current_operations"] == {} and "migrate_send" in after["allowed_operations"]
        assert await xb.fails("VM.get_by_uuid", uuid) == ["UUID_INVALID", "VM", uuid]
        assert await xb("host.get_current_operations", b1) == {}
    assert disks_of(a, vm) == vdis
    assert _vdi_state(b) == b_state and _vdi_state(a) == a_state
    assert memory_free(b, b1) == b1_free and set(b.db.all_refs("VM")) == b_vms


def _cross_pool_estimate(pool: SimPool, vm: str, timing: Any) -> phases.MigrationEstimate:
    """What migrate_send of `vm` to another pool costs: every disk of the VM and its
    snapshots moves, and a running VM's memory."""
    db = pool.db
    rec = db.get("VM", vm)
    vdis = disks_of(pool, vm) + [d for s in rec["snapshots"] for d in disks_of(pool, s)]
    running = rec["power_state"] == "Running"
    return phases.estimate(
        timing,
        allocated_disks=[db.get("VDI", d)["physical_utilisation"] for d in vdis],
        memory_bytes=rec["memory_dynamic_min"] if running else None,
        cross_pool=True,
    )


@pytest.mark.timeout(30)
async def test_largest_cross_pool_migration_fits_the_demo(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    demo = load_lab().timing  # the shipped lab's time scale
    candidates = [
        ref
        for ref, rec in a.db.iter_records("VM")
        if not (rec["is_control_domain"] or rec["is_a_snapshot"] or rec["is_a_template"])
    ]
    longest = max(candidates, key=lambda v: _cross_pool_estimate(a, v, demo).total)
    assert a.db.get("VM", longest)["name_label"] == "db-01"
    assert _cross_pool_estimate(a, longest, demo).real_seconds(demo) < 10.0
    # The model is what actually runs: db-01 to Pool B at the test's time scale.
    predicted = _cross_pool_estimate(a, longest, sim.timing).real_seconds(sim.timing)
    dest = await receive(sim, "Pool B", "b1", "B migration")
    b_shared = sr_ref(b, "B shared iSCSI")
    async with Xapi(master(sim, "Pool A")) as x:
        started = time.monotonic()
        task = await x(
            "Async.VM.migrate_send",
            longest,
            dest,
            True,
            {d: b_shared for d in disks_of(a, longest)},
            {v: net_ref(b, "B management") for v in vifs_of(a, longest)},
            {},
        )
        rec = await x.wait(task)
        elapsed = time.monotonic() - started
    assert rec["status"] == "success", rec
    assert predicted * 0.9 <= elapsed <= predicted + 1.0, (predicted, elapsed)
