"""No migration is lost when the server restarts: history, running and queued migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.migrations.service import MigrationSettings
from tests.helpers import wait_until
from tests.migrations.conftest import Lab, lab_on, pool_configs
from tests.server.conftest import make_config, running_server
from tests.server.xo_client import XoClient
from xen.sim import Simulator

pytestmark = pytest.mark.timeout(120)


async def find(lab: Lab, migration_id: str, predicate=lambda r: True, timeout: float = 30) -> dict:
    async def check() -> dict | None:
        records = await lab.client.call("migration.getAll")
        rec = next((r for r in records if r["id"] == migration_id), None)
        return rec if rec is not None and predicate(rec) else None

    return await wait_until(check, timeout=timeout)


async def test_history_survives_a_restart(sim: Simulator, tmp_path: Path) -> None:
    settings = MigrationSettings()
    async with lab_on(sim, tmp_path, settings) as lab:
        vm = await lab.id_of("VM", "web-01")
        a2 = await lab.id_of("host", "a2")
        migration_id = await lab.client.call("migration.start", {"vm": vm, "targetHost": a2})
        await lab.client.call("migration.wait", {"id": migration_id}, timeout=30)
    async with lab_on(sim, tmp_path, settings) as lab:
        rec = await lab.client.call("migration.get", {"id": migration_id})
        assert rec["status"] == "success" and rec["vm"] == vm and rec["targetHost"] == a2
        assert rec["userEmail"] == "admin@admin.net" and rec["duration"] > 0


async def test_a_migration_running_at_shutdown_keeps_going_and_is_recorded_after(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = MigrationSettings()
    sim.timing.time_scale = 0.01  # db-01 cross-pool: a few seconds
    async with lab_on(sim, tmp_path, settings) as lab:
        vm = await lab.id_of("VM", "db-01")
        b1 = await lab.id_of("host", "b1")
        migration_id = await lab.client.call("migration.start", {"vm": vm, "targetHost": b1})
        await find(lab, migration_id, lambda r: r["phase"] == "disks")
    # The server is down; XAPI goes on with the migration.
    async with lab_on(sim, tmp_path, settings) as lab:
        rec = await find(lab, migration_id, lambda r: r["status"] != "running", timeout=60)
        assert rec["status"] == "success" and rec["progress"] == 1.0
        assert (await lab.get(vm))["$container"] == b1

        # The XAPI task was not cancelled by the shutdown, and is cleaned up after.
        async def no_task_left() -> bool:
            return not await lab.objects(type="task")

        await wait_until(no_task_left, timeout=10)


async def test_a_migration_queued_at_shutdown_is_queued_again(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = MigrationSettings(per_pool_limit=1)
    sim.timing.time_scale = 0.01
    async with lab_on(sim, tmp_path, settings) as lab:
        b1 = await lab.id_of("host", "b1")
        first = await lab.client.call(
            "migration.start", {"vm": await lab.id_of("VM", "db-01"), "targetHost": b1}
        )
        vm = await lab.id_of("VM", "web-01")
        queued = await lab.client.call("migration.start", {"vm": vm, "targetHost": b1})
        assert (await lab.client.call("migration.get", {"id": queued}))["status"] == "queued"
        await find(lab, first, lambda r: r["phase"] == "disks")
    sim.timing.time_scale = 0.002
    async with lab_on(sim, tmp_path, settings) as lab:
        old = await find(lab, queued, lambda r: r["status"] == "interrupted", timeout=60)
        assert old["error"]["code"] == "SERVER_RESTARTED"
        (again,) = old["error"]["params"]
        rec = await lab.client.call("migration.wait", {"id": again}, timeout=60)
        assert rec["status"] == "success" and rec["vm"] == vm
        assert (await lab.get(vm))["$container"] == b1


async def watch(watcher: XoClient, migration_id: str) -> list[dict[str, Any]]:
    """Every pushed state of the migration object, until it is finished."""
    seen: list[dict[str, Any]] = []
    while True:
        message = await watcher.next_notification(timeout=60)
        params = message["params"]
        if message["method"] != "all" or params["type"] != "enter":
            continue
        obj = params["items"].get(migration_id)
        if obj is not None:
            seen.append(obj)
            if obj["status"] not in ("queued", "running"):
                return seen


async def start_and_stop(
    sim: Simulator, tmp_path: Path, settings: MigrationSettings
) -> tuple[str, float]:
    """db-01 to b1 (storage motion, cross-pool), the server stopped during its disk phase:
    the migration's id and the last progress seen before the stop."""
    async with lab_on(sim, tmp_path, settings) as lab:
        vm = await lab.id_of("VM", "db-01")
        b1 = await lab.id_of("host", "b1")
        migration_id = await lab.client.call("migration.start", {"vm": vm, "targetHost": b1})
        rec = await find(lab, migration_id, lambda r: r["phase"] == "disks" and r["progress"] > 0)
    return migration_id, rec["progress"]


async def test_a_migration_running_at_shutdown_is_live_again_after_a_restart(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = MigrationSettings()
    sim.timing.time_scale = 0.03  # db-01 cross-pool: long enough to watch it after the restart
    migration_id, progress_at_stop = await start_and_stop(sim, tmp_path, settings)
    async with lab_on(sim, tmp_path, settings) as lab:
        watcher = await lab.connect()
        watching = asyncio.create_task(watch(watcher, migration_id))
        # Live again under its own id and user, in getAll's live set.
        live = await find(lab, migration_id, lambda r: r["status"] == "running")
        assert live["userEmail"] == "admin@admin.net" and live["mode"] == "migrate_send"
        assert live["xapiTaskRef"] and live["bytesTotal"] > 0
        assert live["progress"] >= progress_at_stop
        # ... and an object of the live collection, as any running migration.
        pushed = (await lab.objects(type="migration"))[migration_id]
        assert pushed["status"] == "running" and pushed["phase"] in ("disks", "memory")

        rec = await lab.client.call("migration.wait", {"id": migration_id}, timeout=60)
        assert rec["status"] == "success" and rec["progress"] == 1.0 and rec["error"] is None
        assert (await lab.get(rec["vm"]))["$container"] == rec["targetHost"]
        # Its progress was pushed as it went, and never went back.
        seen = await asyncio.wait_for(watching, 10)
        running = [obj["progress"] for obj in seen if obj["status"] == "running"]
        assert len(running) >= 3 and running[-1] > running[0], running
        progress = [obj["progress"] for obj in seen]
        assert progress == sorted(progress) and seen[-1]["status"] == "success"
        assert progress[0] >= progress_at_stop
        assert any(obj["eta"] for obj in seen if obj["status"] == "running")
        # The XAPI task was destroyed once followed to its end.
        assert not lab.sim.pool("Pool A").db.all_refs("task")


async def test_a_recovered_migration_can_be_cancelled_while_xapi_allows(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = MigrationSettings(cancel_wait_s=10.0)
    sim.timing.time_scale = 0.03
    migration_id, _ = await start_and_stop(sim, tmp_path, settings)
    async with lab_on(sim, tmp_path, settings) as lab:
        rec = await find(lab, migration_id, lambda r: r["status"] == "running" and r["xapiTask"])
        source = rec["sourceHost"]
        answer = await lab.client.call("migration.cancel", {"id": migration_id}, timeout=20)
        assert answer == {"cancelled": True, "status": "cancelled"}
        final = await lab.client.call("migration.wait", {"id": migration_id}, timeout=20)
        assert final["status"] == "cancelled" and final["error"]["code"] == "TASK_CANCELLED"
        assert final["progress"] < 1.0
        assert (await lab.get(rec["vm"]))["$container"] == source  # it stayed where it was

        # The VM is free again: a new migration of it is accepted and goes through.
        sim.timing.time_scale = 0.002
        again = await lab.client.call(
            "migration.start", {"vm": rec["vm"], "targetHost": rec["targetHost"]}
        )
        done = await lab.client.call("migration.wait", {"id": again}, timeout=60)
        assert done["status"] == "success"


async def test_a_recovered_migration_whose_pool_stays_away_ends_interrupted(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = MigrationSettings(recover_wait_s=1.0, arrival_wait_s=1.0)
    sim.timing.time_scale = 0.03
    migration_id, _ = await start_and_stop(sim, tmp_path, settings)
    pool_a = sim.pool("Pool A")
    pool_a.set_reachable(False)  # the source pool is down when the server starts again
    config = make_config(tmp_path, pools=pool_configs(sim.manifest()), migration=settings)
    try:
        async with running_server(config) as srv:
            client = await XoClient.connect(srv.ws_url)
            try:
                await client.sign_in()
                live = await client.call("migration.get", {"id": migration_id})
                assert live["status"] == "running"  # live while the pool may still come back
                final = await client.call("migration.wait", {"id": migration_id}, timeout=30)
                assert final["status"] == "interrupted"
                assert final["error"]["code"] == "SERVER_RESTARTED"
                assert final["error"]["hint"].startswith("Check where the VM is now")
            finally:
                await client.close()
    finally:
        pool_a.set_reachable(True)


@pytest.mark.timeout(60)
async def test_a_xenmotion_running_at_shutdown_is_live_again_and_ends_on_its_target(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = MigrationSettings()
    # web-01 a1 -> a2 (pool_migrate): a ~20 s memory phase lasts ~2 s at this scale.
    sim.timing.time_scale = 0.1
    sim.timing.dirty_factor = 3.0
    async with lab_on(sim, tmp_path, settings) as lab:
        vm = await lab.id_of("VM", "web-01")
        a1 = await lab.id_of("host", "a1")
        a2 = await lab.id_of("host", "a2")
        assert (await lab.get(vm))["$container"] == a1
        migration_id = await lab.client.call("migration.start", {"vm": vm, "targetHost": a2})
        before = await find(lab, migration_id, lambda r: r["phase"] == "memory")
        assert before["mode"] == "pool_migrate" and before["xapiTaskRef"]
    # The server is down: XAPI is still moving the VM's memory.
    task = sim.pool("Pool A").db.get("task", before["xapiTaskRef"])
    assert task["status"] == "pending" and task["name_label"] == "Async.VM.pool_migrate"
    async with lab_on(sim, tmp_path, settings) as lab:
        live = await find(lab, migration_id, lambda r: r["status"] == "running")
        assert live["mode"] == "pool_migrate" and live["xapiTaskRef"] == before["xapiTaskRef"]
        assert live["progress"] >= before["progress"]
        assert (await lab.objects(type="migration"))[migration_id]["status"] == "running"

        rec = await lab.client.call("migration.wait", {"id": migration_id}, timeout=30)
        assert rec["status"] == "success" and rec["progress"] == 1.0 and rec["error"] is None
        assert (await lab.get(vm))["$container"] == a2
        assert not sim.pool("Pool A").db.all_refs("task")  # followed to its end, destroyed
    async with lab_on(sim, tmp_path, settings) as lab:  # and the history says so
        assert (await lab.client.call("migration.get", {"id": migration_id}))["status"] == (
            "success"
        )


@pytest.mark.timeout(60)
async def test_a_stop_during_the_assert_precheck_does_not_claim_the_vm_moved(
    sim: Simulator, tmp_path: Path
) -> None:
    """The server stops while its `VM.assert_can_migrate` task is the migration's task: the
    VM never started to move, and the record says so after the restart."""
    settings = MigrationSettings()
    sim.timing.time_scale = 0.01
    pool_a = sim.pool("Pool A")
    async with lab_on(sim, tmp_path, settings) as lab:
        vm = await lab.id_of("VM", "db-01")
        source = (await lab.get(vm))["$container"]
        b1 = await lab.id_of("host", "b1")
        # The simulator ends a stand-alone assert task at once (`timing.assert_s` only times
        # migrate_send's own subtask): hold Pool A's event stream back so that the server
        # is still waiting for the assert task's end when it stops.
        pool_a.event_batch_delay_s = 2.0
        try:
            migration_id = await lab.client.call("migration.start", {"vm": vm, "targetHost": b1})
            rec = await find(lab, migration_id, lambda r: r["xapiTaskRef"] is not None)
        finally:
            pool_a.event_batch_delay_s = 0.05
        assert rec["status"] == "running" and rec["phase"] == "preflight"
        task = pool_a.db.get("task", rec["xapiTaskRef"])
        assert task["name_label"] == "Async.VM.assert_can_migrate"
    # Nothing was moved, nor started to be.
    assert not any(
        t["name_label"] == "Async.VM.migrate_send"
        for t in (pool_a.db.get("task", ref) for ref in pool_a.db.all_refs("task"))
    )
    async with lab_on(sim, tmp_path, settings) as lab:
        final = await find(lab, migration_id, lambda r: r["status"] != "running")
        assert final["status"] == "interrupted" and final["progress"] < 1.0
        assert final["error"]["code"] == "SERVER_RESTARTED"
        assert final["error"]["hint"].startswith("Check where the VM is now")
        assert (await lab.get(vm))["$container"] == source  # it is where the record implies
        assert not pool_a.db.all_refs("task")  # the assert task was followed and destroyed

        # The VM is free: a new migration of it goes through.
        sim.timing.time_scale = 0.002
        again = await lab.client.call("migration.start", {"vm": vm, "targetHost": b1})
        done = await lab.client.call("migration.wait", {"id": again}, timeout=60)
        assert done["status"] == "success"
        assert (await lab.get(vm))["$container"] == b1
