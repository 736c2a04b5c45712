"""Migrations when the pool layer misbehaves mid-migration: session expiry, master failover,
outages, injected XAPI failures, XAPI's own storage-migration limit. XAPI keeps migrating in the
simulator meanwhile, as it would on real hosts; the user must see a sensible, timely outcome."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from server.migrations.service import MigrationSettings
from tests.helpers import wait_until
from tests.migrations.conftest import Lab, lab_on
from tests.migrations.helpers import active_for, record, wait_record, watch_migration
from tests.server.xo_client import RpcError
from xen.sim import Simulator
from xen.sim.registry import Fault

pytestmark = pytest.mark.timeout(90)


async def start_vm_migrate(lab: Lab, params: dict[str, Any]) -> tuple[asyncio.Task, str]:
    """vm.migrate on its own connection (it blocks until the end); its migration's id."""
    caller = await lab.connect()
    call = asyncio.create_task(caller.call("vm.migrate", params, timeout=80))
    migration = await wait_until(lambda: active_for(lab, params["vm"]))
    return call, migration["id"]


def sim_tasks(lab: Lab, pool: str) -> dict[str, dict[str, Any]]:
    db = lab.sim.pool(pool).db
    return {ref: db.get("task", ref) for ref in db.all_refs("task")}


async def no_task_left(lab: Lab, pool: str, timeout: float = 10) -> None:
    async def empty() -> bool:
        return not sim_tasks(lab, pool)

    await wait_until(empty, timeout=timeout)


# -- 1. session expiry ------------------------------------------------------------------


async def test_session_expiry_mid_migration_still_succeeds(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01  # db-01 cross-pool: a few seconds
    vm = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])
    logins = pool_a.stats().get("session.login_with_password", 0)

    pool_a.expire_sessions()
    lab.sim.pool("Pool B").expire_sessions()

    assert await call is True
    final = await record(lab, migration_id)
    assert final["status"] == "success" and final["progress"] == 1.0 and final["error"] is None
    assert (await lab.get(vm))["$container"] == b1
    assert pool_a.stats().get("session.login_with_password", 0) > logins  # logged in again
    await no_task_left(lab, "Pool A")


# -- 2. master failover -----------------------------------------------------------------


async def test_master_failover_mid_migration_moves_the_connection_and_succeeds(
    lab: Lab,
) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    watcher = await lab.connect()
    watching = asyncio.create_task(watch_migration(watcher, vm))
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])

    failed_over_at = time.monotonic()
    pool_a.failover("a2")  # a1 now answers HOST_IS_SLAVE(a2's address)

    assert await call is True
    seen = await watching
    final = await record(lab, migration_id)
    assert final["status"] == "success" and final["progress"] == 1.0
    assert (await lab.get(vm))["$container"] == b1
    # Progress kept being pushed after the failover, and never went back.
    after = [
        obj["progress"] for t, obj in seen if t > failed_over_at and obj["status"] == "running"
    ]
    assert len(after) >= 3 and after[-1] > after[0], after
    progress = [obj["progress"] for _, obj in seen]
    assert progress == sorted(progress)
    # The connection follows the new master, which destroyed the XAPI task.
    a2_address = next(
        h["address"] for h in lab.sim.manifest()["pools"][0]["hosts"] if h["name"] == "a2"
    )
    conn = lab.server.state.pools.connection_for_pool(pool_a.uuid)
    assert a2_address in conn.master_url and conn.status == "connected"
    await no_task_left(lab, "Pool A")
    # Another migration goes through the new master.
    web = await lab.id_of("VM", "web-01")
    a3 = await lab.id_of("host", "a3")
    assert await lab.migrate("vm.migrate", {"vm": web, "targetHost": a3}) is True


# -- 3. source pool unreachable ---------------------------------------------------------


async def test_source_pool_outage_mid_migration_reports_success_after_resync(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    rec = await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])

    pool_a.set_reachable(False)
    await asyncio.sleep(1.5)  # XAPI keeps migrating; we see nothing of Pool A meanwhile
    assert (await record(lab, migration_id))["status"] == "running"
    assert sim_tasks(lab, "Pool A")[rec["xapiTaskRef"]]["status"] == "pending"  # back mid-way
    pool_a.set_reachable(True)

    assert await call is True
    final = await record(lab, migration_id)
    assert final["status"] == "success" and final["progress"] == 1.0 and final["error"] is None
    assert (await lab.get(vm))["$container"] == b1
    await no_task_left(lab, "Pool A")


async def test_source_pool_outage_over_the_end_of_the_migration_reports_success(
    lab: Lab,
) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "web-02")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    rec = await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])

    pool_a.set_reachable(False)
    ref = rec["xapiTaskRef"]

    async def finished_in_xapi() -> bool:
        task = sim_tasks(lab, "Pool A").get(ref)
        return task is not None and task["status"] != "pending"

    await wait_until(finished_in_xapi, timeout=30)
    assert sim_tasks(lab, "Pool A")[ref]["status"] == "success"
    await asyncio.sleep(0.5)
    pool_a.set_reachable(True)

    assert await call is True
    final = await record(lab, migration_id)
    assert final["status"] == "success" and final["progress"] == 1.0
    assert (await lab.get(vm))["$container"] == b1
    await no_task_left(lab, "Pool A")


async def test_task_vanished_during_an_outage_is_settled_by_where_the_vm_is(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "web-02")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    rec = await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])

    pool_a.set_reachable(False)
    ref = rec["xapiTaskRef"]

    async def finished_in_xapi() -> bool:
        task = sim_tasks(lab, "Pool A").get(ref)
        return task is not None and task["status"] != "pending"

    await wait_until(finished_in_xapi, timeout=30)
    # The task is lost while we cannot see the pool (a toolstack restart forgets tasks).
    pool_a.db.delete("task", ref)
    pool_a.set_reachable(True)

    # The VM did arrive on b1: that is a success, not a failure.
    assert await call is True
    final = await record(lab, migration_id)
    assert final["status"] == "success", final
    assert (await lab.get(vm))["$container"] == b1


async def test_task_vanished_before_the_vm_moved_is_a_clear_failure(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "web-02")
    a2 = await lab.id_of("host", "a2")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    # The migration fails in XAPI while we are away, and its task is then lost too.
    pool_a.add_fault(Fault(kind="migration", vm="web-02", phase="memory", code="MIRROR_FAILED"))
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    rec = await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])
    pool_a.set_reachable(False)
    ref = rec["xapiTaskRef"]

    async def finished_in_xapi() -> bool:
        task = sim_tasks(lab, "Pool A").get(ref)
        return task is not None and task["status"] != "pending"

    await wait_until(finished_in_xapi, timeout=30)
    pool_a.db.delete("task", ref)
    pool_a.set_reachable(True)

    with pytest.raises(RpcError) as info:
        await call
    assert info.value.error["data"]["code"] == "TASK_DESTROYED"
    final = await record(lab, migration_id)
    assert final["status"] == "failure"
    assert final["error"]["code"] == "TASK_DESTROYED"
    assert "the VM is still on a2" in final["error"]["message"]  # where the VM is now
    assert final["error"]["hint"].startswith("XAPI lost the migration's task")
    assert (await lab.get(vm))["$container"] == a2


async def test_reconnecting_the_source_server_mid_migration_follows_the_task(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    server_a = next(
        s["id"] for s in await lab.client.call("server.getAll") if s["label"] == "Pool A"
    )
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])

    # An admin disconnects and reconnects the pool: its connection (and task watch) is gone.
    await lab.client.call("server.disable", {"id": server_a})
    await asyncio.sleep(0.3)
    assert (await record(lab, migration_id))["status"] == "running"
    await lab.client.call("server.enable", {"id": server_a})

    assert await call is True
    final = await record(lab, migration_id)
    assert final["status"] == "success" and final["progress"] == 1.0
    assert (await lab.get(vm))["$container"] == b1
    await no_task_left(lab, "Pool A")
    assert pool_a.stats().get("task.cancel", 0) == 0


async def test_cancel_during_an_outage_says_so_and_the_outcome_is_still_recorded(
    lab: Lab,
) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    conn = lab.server.state.pools.connection_for_pool(pool_a.uuid)
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])
    pool_a.set_reachable(False)

    async def outage_seen() -> bool:
        return conn.status != "connected"

    await wait_until(outage_seen, timeout=10)

    answer = await lab.client.call("migration.cancel", {"id": migration_id}, timeout=20)
    assert answer["cancelled"] is False and answer["outcome"] == "pool_unreachable"
    assert "cannot reach the pool" in answer["reason"]
    pool_a.set_reachable(True)
    assert await call is True
    assert (await record(lab, migration_id))["status"] == "success"


async def test_a_pool_that_does_not_come_back_ends_as_interrupted(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = MigrationSettings(retry_delay_s=0.2, recover_wait_s=1.0, arrival_wait_s=1.0)
    sim.timing.time_scale = 0.01
    async with lab_on(sim, tmp_path, settings) as lab:
        vm = await lab.id_of("VM", "db-01")
        b1 = await lab.id_of("host", "b1")
        server_a = next(
            s["id"] for s in await lab.client.call("server.getAll") if s["label"] == "Pool A"
        )
        pool_a = lab.sim.pool("Pool A")
        call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
        await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])
        await lab.client.call("server.disable", {"id": server_a})  # and never enabled again

        with pytest.raises(RpcError) as info:
            await call
        assert info.value.error["code"] == 9  # server unreachable
        assert info.value.error["data"]["objectId"] == pool_a.uuid
        final = await record(lab, migration_id)
        assert final["status"] == "interrupted" and final["error"]["code"] == "CONNECTION_LOST"
        assert "check where the VM is" in final["error"]["hint"]
        # Nothing is left locked: the VM is free again for the server.
        services = lab.server.state.services["migrations"]
        assert vm not in services._by_vm and not services.queue.running_in_pool(pool_a.uuid)


# -- 4. target pool unreachable ---------------------------------------------------------


async def test_target_pool_unreachable_fails_clearly_and_frees_the_queue(lab: Lab) -> None:
    lab.server.state.services["migrations"].queue.per_pool = 1  # one slot: it must be freed
    vm = await lab.id_of("VM", "web-02")
    b1 = await lab.id_of("host", "b1")
    pool_b = lab.sim.pool("Pool B")
    pool_b.set_reachable(False)

    started = time.monotonic()
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": b1})
    assert time.monotonic() - started < 8  # call_wait (5 s) and no more
    assert error["code"] == 9 and error["message"] == "server unreachable"
    assert error["data"]["objectId"] == pool_b.uuid
    records = await lab.client.call("migration.getAll")
    failed = next(r for r in records if r["vm"] == vm)
    assert failed["status"] == "failure" and failed["error"]["code"] == "POOL_UNAVAILABLE"
    assert failed["error"]["hint"] and "server.getAll" in failed["error"]["hint"]
    assert (await lab.get(vm))["$container"] == await lab.id_of("host", "a2")

    # The slot of Pool A was given back: another storage migration runs at once.
    app = await lab.id_of("VM", "app-01")
    a3 = await lab.id_of("host", "a3")
    assert await lab.migrate("vm.migrate", {"vm": app, "targetHost": a3}) is True
    pool_b.set_reachable(True)


# -- 5. injected XAPI failure -----------------------------------------------------------


async def test_xapi_failure_mid_migration_is_reported_and_the_vm_can_be_migrated_again(
    lab: Lab,
) -> None:
    lab.sim.timing.time_scale = 0.005
    vm = await lab.id_of("VM", "web-02")
    a2 = await lab.id_of("host", "a2")
    b1 = await lab.id_of("host", "b1")
    pool_a = lab.sim.pool("Pool A")
    fault = Fault(
        kind="migration",
        vm="web-02",
        phase="memory",
        code="VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED",
        params=["connection reset by peer"],
    )
    pool_a.add_fault(fault)

    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": b1})
    assert error["code"] == -32000
    assert error["data"]["code"] == "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED"
    assert error["data"]["params"] == ["connection reset by peer"]
    assert error["data"]["task"]["status"] == "failure"
    failed = next(r for r in await lab.client.call("migration.getAll") if r["vm"] == vm)
    assert failed["status"] == "failure" and failed["progress"] < 1.0
    assert failed["error"]["code"] == "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED"
    assert "migration network" in failed["error"]["hint"]
    assert (await lab.get(vm))["$container"] == a2
    await no_task_left(lab, "Pool A")

    # The per-VM lock was released: the same VM migrates right away once the fault is gone.
    pool_a.faults.remove(fault)
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": b1}) is True
    assert (await lab.get(vm))["$container"] == b1


# -- 6. TOO_MANY_STORAGE_MIGRATES --------------------------------------------------------


def _start_storage_migrations(pool: dict[str, Any], vm_names: list[str], target: str) -> list:
    """Outside the server: 3 intra-pool storage migrations through XAPI itself."""
    session = XenAPI.Session(pool["master"])
    session.xenapi.login_with_password(pool["username"], pool["password"], "1.0", "test")
    try:
        x = session.xenapi
        host = x.host.get_by_name_label(target)[0]
        sr = x.SR.get_by_name_label(f"A local {target}")[0]
        network = x.network.get_by_name_label("A management")[0]
        dest = x.host.migrate_receive(host, network, {})
        tasks = []
        for name in vm_names:
            vm = x.VM.get_by_name_label(name)[0]
            vdi_map = {}
            for vbd in x.VM.get_VBDs(vm):
                vdi = x.VBD.get_VDI(vbd)
                if vdi != "OpaqueRef:NULL" and x.VBD.get_type(vbd) == "Disk":
                    vdi_map[vdi] = sr
            tasks.append(x.Async.VM.migrate_send(vm, dest, True, vdi_map, {}, {}))
        return tasks
    finally:
        session.xenapi.session.logout()


async def test_too_many_storage_migrates_waits_and_retries_until_a_slot_frees(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    pool_a = lab.sim.manifest()["pools"][0]
    # a2 runs web-02, runner-01 and runner-03: three storage migrations fill XAPI's limit.
    tasks = await asyncio.to_thread(
        _start_storage_migrations, pool_a, ["web-02", "runner-01", "runner-03"], "a3"
    )
    assert len(tasks) == 3
    vm = await lab.id_of("VM", "app-01")  # also on a2
    b1 = await lab.id_of("host", "b1")
    call, migration_id = await start_vm_migrate(lab, {"vm": vm, "targetHost": b1})
    waiting = await wait_record(lab, migration_id, lambda r: r["waitingFor"], timeout=20)
    assert "TOO_MANY_STORAGE_MIGRATES" in waiting["waitingFor"]
    assert waiting["status"] == "running"

    assert await call is True
    final = await record(lab, migration_id)
    assert final["status"] == "success" and final["waitingFor"] is None
    assert (await lab.get(vm))["$container"] == b1
    sim_a = lab.sim.pool("Pool A")
    assert sim_a.stats().get("Async.VM.migrate_send", 0) >= 5  # 3 outside + refused + retried
