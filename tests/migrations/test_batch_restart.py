"""A batch survives a server restart: it is resumed, paused or not, its moves followed to the
end (the running one adopted, the queued ones queued again)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from server.migrations.service import MigrationSettings
from tests.helpers import wait_until
from tests.migrations.batch_helpers import batch_of, running_vms_on, wait_batch
from tests.migrations.conftest import Lab, lab_on
from xen.sim import Simulator
from xen.sim.registry import Fault

pytestmark = pytest.mark.timeout(120)

SETTINGS = MigrationSettings(per_pool_limit=1, retry_delay_s=0.2)


async def start_cross_pool_batch(lab: Lab) -> dict:
    """db-01 (the longest move), web-01 and cd-vm to Pool B, one at a time."""
    pool_b = (await lab.get(await lab.id_of("host", "b1")))["$pool"]
    moves = [{"vm": await lab.id_of("VM", name)} for name in ("db-01", "web-01", "cd-vm")]
    return await lab.client.call("migration.batch", {"moves": moves, "targetPool": pool_b})


async def test_a_restart_mid_batch_resumes_the_batch(sim: Simulator, tmp_path: Path) -> None:
    sim.timing.time_scale = 0.01  # db-01 to Pool B: a few seconds
    async with lab_on(sim, tmp_path, SETTINGS) as lab:
        batch = await start_cross_pool_batch(lab)
        running = await wait_batch(lab, batch["id"], lambda b: b["totals"]["running"] == 1)
        first = next(m for m in running["moves"] if m["status"] == "running")
        assert first["vmName"] == "db-01"  # largest first
        queued = {m["vm"]: m["migration"] for m in running["moves"] if m["status"] == "queued"}
        assert len(queued) == 2

        async def moving() -> bool:
            record = await lab.client.call("migration.get", {"id": first["migration"]})
            return record["phase"] == "disks" and record["progress"] > 0

        await wait_until(moving)  # XAPI is moving its disks: the stop leaves it running
    # The server is down; XAPI goes on with db-01.
    sim.timing.time_scale = 0.002
    async with lab_on(sim, tmp_path, SETTINGS) as lab:
        again = await batch_of(lab, batch["id"])
        assert again["status"] == "running"
        done = await lab.client.call("migration.batch.wait", {"id": batch["id"]}, timeout=60)
        assert done["status"] == "success", done["moves"]
        by_vm = {m["vm"]: m for m in done["moves"]}
        assert by_vm[first["vm"]]["migration"] == first["migration"]  # adopted, same id
        for vm, old_id in queued.items():
            assert by_vm[vm]["migration"] != old_id  # queued again, followed by the batch
            record = await lab.client.call("migration.get", {"id": by_vm[vm]["migration"]})
            assert record["batch"] == batch["id"] and record["status"] == "success"
        vms = await lab.objects(type="VM")
        for move in done["moves"]:
            assert vms[move["vm"]]["$container"] == move["targetHost"]


async def test_a_paused_batch_is_still_paused_after_a_restart(
    sim: Simulator, tmp_path: Path
) -> None:
    """Stopped right after it starts: a move the stop interrupted before XAPI moved its VM
    runs again, the queued ones wait for `resume`."""
    sim.timing.time_scale = 0.01
    async with lab_on(sim, tmp_path, SETTINGS) as lab:
        batch = await start_cross_pool_batch(lab)
        await lab.client.call("migration.batch.pause", {"id": batch["id"]})
    sim.timing.time_scale = 0.002
    async with lab_on(sim, tmp_path, SETTINGS) as lab:
        # Whatever was running finishes; the rest waits for `resume`.
        paused = await wait_batch(
            lab,
            batch["id"],
            lambda b: b["totals"]["running"] == 0 and b["totals"]["queued"] >= 2,
            timeout=60,
        )
        assert paused["status"] == "paused"
        await asyncio.sleep(0.5)
        assert (await batch_of(lab, batch["id"]))["totals"]["queued"] == paused["totals"]["queued"]
        await lab.client.call("migration.batch.resume", {"id": batch["id"]})
        done = await lab.client.call("migration.batch.wait", {"id": batch["id"]}, timeout=60)
        assert done["status"] == "success" and done["totals"]["success"] == 3


async def test_a_maintenance_that_fails_after_a_restart_enables_the_host_again(
    sim: Simulator, tmp_path: Path
) -> None:
    """xo-server's contract (the host is enabled again when the evacuation fails) holds when
    the failure comes after a restart, with no call left to answer."""
    sim.timing.time_scale = 0.01
    async with lab_on(sim, tmp_path, SETTINGS) as lab:
        a2 = await lab.id_of("host", "a2")
        call = asyncio.create_task(
            lab.client.call("host.setMaintenanceMode", {"id": a2, "maintenance": True}, timeout=60)
        )

        async def started() -> dict | None:
            batches = await lab.client.call("migration.batch.getAll")
            return batches[0] if batches and batches[0]["totals"]["running"] == 1 else None

        batch = await wait_until(started)
        assert batch["kind"] == "maintenance" and (await lab.get(a2))["enabled"] is False
        # The last move to go fails in XAPI, after the restart.
        last = next(m for m in reversed(batch["moves"]) if m["status"] == "queued")
        sim.pool("Pool A").add_fault(
            Fault(
                kind="migration",
                vm=last["vmName"],
                phase="memory",
                code="VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED",
            )
        )
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
    sim.timing.time_scale = 0.002
    async with lab_on(sim, tmp_path, SETTINGS) as lab:
        done = await lab.client.call("migration.batch.wait", {"id": batch["id"]}, timeout=60)
        assert done["status"] == "failure", done["moves"]
        by_vm = {m["vmName"]: m for m in done["moves"]}
        assert by_vm[last["vmName"]]["status"] == "failure"

        async def enabled_again() -> bool:
            return (await lab.get(a2))["enabled"] is True

        await wait_until(enabled_again, timeout=10)
        assert last["vmName"] in await running_vms_on(lab, a2)  # it stayed where it was
