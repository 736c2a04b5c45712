"""No migration is lost when the server restarts: history, running and queued migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.migrations.service import MigrationSettings
from tests.migrations.conftest import Lab, lab_on, wait_until
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
