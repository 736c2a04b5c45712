"""Batches of moves: host evacuation planned as a whole, refusals explained before anything
moves, memory never overcommitted (checked against XAPI's own host memory), pool-to-pool
batches within the queue's limits, pause / resume / cancel, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.migrations.service import MigrationSettings
from tests.helpers import wait_until
from tests.migrations.batch_helpers import (
    MemorySampler,
    batch_of,
    entered,
    moves_by_name,
    running_vms_on,
    simulator,
    two_host_pool,
    wait_batch,
)
from tests.migrations.conftest import Lab, lab_on
from tests.server.xo_client import RpcError, XoClient
from xen.sim import generate_lab
from xen.sim.registry import Fault

pytestmark = pytest.mark.timeout(120)


async def test_evacuating_a1_moves_every_running_vm_to_a2_a3_without_overcommitting(
    lab: Lab,
) -> None:
    a1, a2, a3 = [await lab.id_of("host", name) for name in ("a1", "a2", "a3")]
    before = await running_vms_on(lab, a1)
    assert before == ["big-mem", "cd-vm", "db-01", "web-01"]
    watcher = await lab.connect()
    async with MemorySampler(lab.sim) as memory:
        batch = await lab.client.call("migration.evacuate", {"host": a1}, timeout=60)
        assert batch["type"] == "migrationBatch" and batch["kind"] == "evacuate"
        assert {m["vmName"] for m in batch["moves"]} == set(before)
        assert all(m["status"] != "refused" for m in batch["moves"])
        done = await lab.client.call("migration.batch.wait", {"id": batch["id"]}, timeout=60)
    memory.assert_never_overcommitted()
    assert done["status"] == "success", done["moves"]
    assert done["totals"]["success"] == 4 and done["progress"] == 1.0
    assert await running_vms_on(lab, a1) == []
    vms = await lab.objects(type="VM")
    for move in done["moves"]:
        assert move["targetHost"] in (a2, a3)
        assert vms[move["vm"]]["$container"] == move["targetHost"]
        # Each move was an ordinary migration of the service, tagged with the batch.
        record = await lab.client.call("migration.get", {"id": move["migration"]})
        assert record["batch"] == batch["id"] and record["status"] == "success"
    # Spread, least loaded first: big-mem (40 GiB) and db-01 (16 GiB) do not share a host.
    placed = moves_by_name(done)
    assert placed["big-mem"]["targetHost"] != placed["db-01"]["targetHost"]
    # db-01's local disk cannot be seen from a2/a3: storage motion to the shared SR.
    assert placed["db-01"]["mode"] == "migrate_send"
    assert "A shared NFS" in " ".join(placed["db-01"]["reasons"])
    assert placed["web-01"]["mode"] == "pool_migrate"
    # The batch object was pushed through `all`, from running to success.
    statuses = []
    while not statuses or statuses[-1] != "success":
        for obj in await entered(watcher):
            if obj.get("type") == "migrationBatch" and obj["id"] == batch["id"]:
                statuses.append(obj["status"])
    assert statuses[0] == "running"


async def test_evacuating_b1_names_the_vms_that_cannot_go_before_anything_moves(
    lab: Lab,
) -> None:
    b1, b2 = await lab.id_of("host", "b1"), await lab.id_of("host", "b2")
    on_b1 = await running_vms_on(lab, b1)
    plan = await lab.client.call("migration.evacuate", {"host": b1, "dryRun": True}, timeout=60)
    assert plan["id"] is None and plan["status"] == "planned"
    refused = [m for m in plan["moves"] if m["status"] == "refused"]
    placed = [m for m in plan["moves"] if m["status"] != "refused"]
    # b2 (8 GiB, an older CPU) cannot hold all of b1's VMs; whether a VM is refused for
    # memory or for its CPU is XAPI's verdict and ours, each one says which and why.
    assert refused and len(refused) + len(placed) == len(on_b1)
    for move in refused:
        assert move["targetHost"] is None and move["migration"] is None
        refusal = move["refusal"]
        assert refusal["code"] in ("HOST_NOT_ENOUGH_FREE_MEMORY", "VM_INCOMPATIBLE_WITH_THIS_HOST")
        assert "b2" in refusal["message"]
        assert [r["hostName"] for r in move["rejectedHosts"]] == ["b2"]
    b2_free = (await lab.get(b2))["memory"]
    room = b2_free["size"] - b2_free["usage"]
    assert sum(m["memoryReserved"] for m in placed) <= room
    # Nothing moved, nothing started.
    assert await lab.client.call("migration.getAll") == []
    assert await running_vms_on(lab, b1) == on_b1

    batch = await lab.client.call("migration.evacuate", {"host": b1}, timeout=60)
    assert {m["vmName"] for m in batch["moves"] if m["status"] == "refused"} == {
        m["vmName"] for m in refused
    }
    done = await lab.client.call("migration.batch.wait", {"id": batch["id"]}, timeout=60)
    assert done["status"] == "failure"  # not every VM could leave
    assert done["totals"]["refused"] == len(refused)
    assert done["totals"]["success"] == len(placed)
    assert await running_vms_on(lab, b1) == sorted(m["vmName"] for m in refused)


async def test_memory_held_by_earlier_moves_refuses_the_next_vm(tmp_path: Path) -> None:
    """`small` has room for two 3 GiB VMs, not three: the plan says so before anything
    moves, and running it never overcommits `small` (XAPI's figures, sampled throughout)."""
    lab_spec = two_host_pool(10, [("vm-a", 3), ("vm-b", 3), ("vm-c", 3)])
    async with (
        simulator(lab_spec) as sim,
        lab_on(sim, tmp_path, MigrationSettings(retry_delay_s=0.2)) as lab,
    ):
        big = await lab.id_of("host", "big")
        plan = await lab.client.call("migration.evacuate", {"host": big, "dryRun": True})
        by_name = moves_by_name(plan)
        refused = [name for name, m in by_name.items() if m["status"] == "refused"]
        assert len(refused) == 1
        refusal = by_name[refused[0]]["refusal"]
        assert refusal["code"] == "HOST_NOT_ENOUGH_FREE_MEMORY"
        assert "after the earlier moves of the batch" in refusal["message"]
        for name, move in by_name.items():
            if name not in refused:
                assert move["targetHostName"] == "small" and move["mode"] == "pool_migrate"
                assert any("memory:" in r for r in move["reasons"])
        async with MemorySampler(sim) as memory:
            batch = await lab.client.call("migration.evacuate", {"host": big})
            done = await lab.client.call("migration.batch.wait", {"id": batch["id"]})
        memory.assert_never_overcommitted()
        assert memory.worst["small"] > 0.75  # it was nearly full: the check meant something
        assert done["totals"]["success"] == 2 and done["totals"]["refused"] == 1
        assert await running_vms_on(lab, big) == refused


async def test_cpu_compatibility_is_xapis_verdict(lab: Lab) -> None:
    """Pool A's VMs booted with CPU features b2 lacks: XAPI says so, the plan repeats it."""
    web = await lab.id_of("VM", "web-01")
    b1, b2 = await lab.id_of("host", "b1"), await lab.id_of("host", "b2")
    pool_b = (await lab.get(b1))["$pool"]
    plan = await lab.client.call(
        "migration.batch", {"moves": [{"vm": web, "targetHost": b2}], "dryRun": True}
    )
    (move,) = plan["moves"]
    assert move["status"] == "refused"
    assert move["refusal"]["code"] == "VM_INCOMPATIBLE_WITH_THIS_HOST"
    assert move["refusal"]["params"][:2] == [web, b2]  # XO ids, not XAPI refs
    assert "assert_can_migrate" in move["refusal"]["message"]
    # Placed by the planner in Pool B: b1 is the one XAPI accepts.
    plan = await lab.client.call(
        "migration.batch", {"moves": [{"vm": web}], "targetPool": pool_b, "dryRun": True}
    )
    (move,) = plan["moves"]
    assert move["status"] == "planned" and move["targetHost"] == b1
    assert move["mode"] == "migrate_send"
    assert [r["code"] for r in move["rejectedHosts"]] == ["VM_INCOMPATIBLE_WITH_THIS_HOST"]
    assert "B shared iSCSI" in " ".join(move["reasons"])  # shared storage preferred
    assert {d["srTo"] for d in move["disks"]} == {await lab.id_of("SR", "B shared iSCSI")}


# -- pool to pool ------------------------------------------------------------------------------


def ten_and_ten() -> Any:
    """Two pools of two hosts (`Gen 1`, `Gen 2`), ten running VMs each."""
    return generate_lab(20, 2, hosts_per_pool=2, time_scale=0.002)


async def test_a_pool_to_pool_batch_of_10_stays_within_the_per_pool_limit(
    tmp_path: Path,
) -> None:
    async with (
        # Half a second per move: the batch object, pushed 4 times a second, shows each step.
        simulator(ten_and_ten(), time_scale=0.02) as sim,
        lab_on(sim, tmp_path, MigrationSettings(retry_delay_s=0.2)) as lab,
    ):
        pools = await lab.objects(type="pool")
        gen = {p["name_label"]: p["id"] for p in pools.values()}
        vms = [v for v in (await lab.objects(type="VM")).values() if v["$pool"] == gen["Gen 1"]]
        assert len(vms) == 10
        watcher = await lab.connect()
        batch = await lab.client.call(
            "migration.batch",
            {"moves": [{"vm": v["id"]} for v in vms], "targetPool": gen["Gen 2"]},
        )
        batch_id = batch["id"]
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["status"] == "running":
            for obj in await entered(watcher, timeout=30):
                if obj.get("type") == "migrationBatch" and obj["id"] == batch_id:
                    seen.append(obj)
        assert seen[-1]["status"] == "success", seen[-1]["moves"]
        full_line = at_limit = False
        for state in seen:
            running = [m for m in state["moves"] if m["status"] == "running"]
            assert len(running) <= 3  # the per-pool limit
            at_limit = at_limit or len(running) == 3
            queued = [m for m in state["moves"] if m["status"] == "queued"]
            positions = sorted(m["queuePosition"] for m in queued if m["queuePosition"])
            assert positions == list(range(1, len(positions) + 1))  # no gap, no duplicate
            full_line = full_line or positions == list(range(1, 8))
        assert full_line and at_limit  # 3 moving, 7 waiting with their places, at some point
        final = seen[-1]
        assert final["totals"]["success"] == 10 and final["bytesDone"] == final["bytesTotal"]
        on_gen2 = {h["id"] for h in (await lab.objects(type="host")).values()}
        for move in final["moves"]:
            assert move["targetPool"] == gen["Gen 2"] and move["targetHost"] in on_gen2
        # Spread: both hosts of Gen 2 got some.
        assert len({m["targetHost"] for m in final["moves"]}) == 2


async def test_pause_holds_new_moves_and_resume_lets_them_go(tmp_path: Path) -> None:
    async with (
        simulator(ten_and_ten(), time_scale=0.004) as sim,
        lab_on(sim, tmp_path, MigrationSettings(per_pool_limit=2)) as lab,
    ):
        pools = {p["name_label"]: p["id"] for p in (await lab.objects(type="pool")).values()}
        vms = [v for v in (await lab.objects(type="VM")).values() if v["$pool"] == pools["Gen 1"]]
        batch = await lab.client.call(
            "migration.batch",
            {"moves": [{"vm": v["id"]} for v in vms[:6]], "targetPool": pools["Gen 2"]},
        )
        paused = await lab.client.call("migration.batch.pause", {"id": batch["id"]})
        assert paused["status"] == "paused" and paused["paused"] is True

        def started(b: dict[str, Any]) -> int:
            return sum(1 for m in b["moves"] if m["status"] not in ("planned", "queued"))

        # What had started before the pause goes on (at most the 2 the limit lets through);
        # nothing new starts while paused.
        await asyncio.sleep(0.3)
        settled = await wait_batch(lab, batch["id"], lambda b: b["totals"]["running"] == 0)
        count = started(settled)
        assert count <= 2
        await asyncio.sleep(0.5)
        still = await batch_of(lab, batch["id"])
        assert started(still) == count and still["status"] == "paused"
        assert still["totals"]["queued"] == 6 - count
        resumed = await lab.client.call("migration.batch.resume", {"id": batch["id"]})
        assert resumed["status"] == "running"
        done = await lab.client.call("migration.batch.wait", {"id": batch["id"]}, timeout=60)
        assert done["status"] == "success" and done["totals"]["success"] == 6


async def test_cancel_drops_queued_moves_and_cancels_running_ones(tmp_path: Path) -> None:
    async with (
        simulator(ten_and_ten(), time_scale=0.02) as sim,
        lab_on(sim, tmp_path, MigrationSettings(per_pool_limit=2, cancel_wait_s=10)) as lab,
    ):
        pools = {p["name_label"]: p["id"] for p in (await lab.objects(type="pool")).values()}
        vms = [v for v in (await lab.objects(type="VM")).values() if v["$pool"] == pools["Gen 1"]]
        batch = await lab.client.call(
            "migration.batch",
            {"moves": [{"vm": v["id"]} for v in vms[:5]], "targetPool": pools["Gen 2"]},
        )
        running = await wait_batch(lab, batch["id"], lambda b: b["totals"]["running"] == 2)

        async def copying_disks() -> bool:
            for move in running["moves"]:
                if move["status"] == "running":
                    record = await lab.client.call("migration.get", {"id": move["migration"]})
                    if record["phase"] != "disks" or not record["progress"]:
                        return False
            return True

        await wait_until(copying_disks)  # XAPI still accepts a cancel there
        answer = await lab.client.call("migration.batch.cancel", {"id": batch["id"]}, timeout=60)
        assert answer["status"] == "cancelled" and answer["cancelled"] == 5, answer
        done = await batch_of(lab, batch["id"])
        assert done["status"] == "cancelled" and done["totals"]["cancelled"] == 5
        vm_objects = await lab.objects(type="VM")
        for move in done["moves"]:
            assert vm_objects[move["vm"]]["$pool"] == pools["Gen 1"]  # none moved
        # A finished batch cannot be paused or cancelled again: said clearly.
        error = await lab.error_of("migration.batch.pause", {"id": batch["id"]})
        assert error["code"] == 5 and "cancelled" in error["data"]["reason"]


async def test_a_failed_move_does_not_stop_the_others_unless_stop_on_error(
    tmp_path: Path,
) -> None:
    async with (
        simulator(ten_and_ten(), time_scale=0.002) as sim,
        lab_on(sim, tmp_path, MigrationSettings(per_pool_limit=1)) as lab,
    ):
        pools = {p["name_label"]: p["id"] for p in (await lab.objects(type="pool")).values()}
        vms = sorted(
            (v for v in (await lab.objects(type="VM")).values() if v["$pool"] == pools["Gen 1"]),
            key=lambda v: v["name_label"],
        )
        # The first VM's migration fails in XAPI, after the plan accepted it.
        sim.pool("Gen 1").add_fault(_fault(vms[0]["name_label"]))
        moves = [{"vm": v["id"]} for v in vms[:4]]
        target = {"targetPool": pools["Gen 2"]}
        going = await lab.client.call("migration.batch", {"moves": moves[:2], **target})
        done = await lab.client.call("migration.batch.wait", {"id": going["id"]}, timeout=60)
        assert done["status"] == "failure"
        assert sorted(m["status"] for m in done["moves"]) == ["failure", "success"]
        failed = next(m for m in done["moves"] if m["status"] == "failure")
        assert failed["error"]["code"] == "VM_MIGRATE_FAILED"

        sim.pool("Gen 1").add_fault(_fault(vms[2]["name_label"]))
        stopping = await lab.client.call(
            "migration.batch", {"moves": moves[2:], **target, "stopOnError": True}
        )
        done = await lab.client.call("migration.batch.wait", {"id": stopping["id"]}, timeout=60)
        assert done["status"] == "failure"
        by_vm = {m["vm"]: m["status"] for m in done["moves"]}
        assert by_vm == {vms[2]["id"]: "failure", vms[3]["id"]: "cancelled"}


def _fault(vm_name: str) -> Fault:
    return Fault(kind="migration", vm=vm_name, phase="dispatch", code="VM_MIGRATE_FAILED")


# -- bad input -------------------------------------------------------------------------------


async def test_bad_input_gets_a_clear_error_and_changes_nothing(lab: Lab) -> None:
    web = await lab.id_of("VM", "web-01")
    a2 = await lab.id_of("host", "a2")
    cases = [
        ("migration.batch", {"moves": []}, 10),
        ("migration.batch", {"moves": [{"vm": "nope"}]}, 1),
        ("migration.batch", {"moves": [{"vm": web, "targetHost": web}]}, 1),
        ("migration.batch", {"moves": [{"vm": web}, {"vm": web}]}, 10),
        ("migration.batch", {"moves": [{"vm": web, "colour": "red"}]}, 10),
        ("migration.batch", {"moves": [{"vm": web}], "targetPool": a2}, 1),
        ("migration.evacuate", {"host": web}, 1),
        ("migration.evacuate", {"host": a2, "targets": ["nope"]}, 1),
        ("migration.evacuate", {"host": a2, "dryRun": "yes"}, 10),
        ("migration.batch.get", {"id": "nope"}, 1),
        ("migration.batch.cancel", {"id": "nope"}, 1),
    ]
    for method, params, code in cases:
        error = await lab.error_of(method, params)
        assert error["code"] == code, (method, params, error)
    assert await lab.client.call("migration.getAll") == []
    assert await lab.client.call("migration.batch.getAll") == []


async def test_only_admins_move_vms_in_batches(lab: Lab) -> None:
    await lab.client.call(
        "user.create", {"email": "ops@example.net", "password": "pw", "permission": "none"}
    )
    other = await XoClient.connect(lab.server.ws_url)
    lab.clients.append(other)
    await other.sign_in("ops@example.net", "pw")
    web = await lab.id_of("VM", "web-01")
    a1 = await lab.id_of("host", "a1")
    # Not even with every right on the pool: a batch places VMs where it chooses.
    me = (await other.call("session.getUser"))["id"]
    pool_a = await lab.id_of("pool", "Pool A")
    await lab.client.call("acl.add", {"subject": me, "object": pool_a, "action": "admin"})
    for method, params in [
        ("migration.batch", {"moves": [{"vm": web}]}),
        ("migration.evacuate", {"host": a1}),
        ("host.setMaintenanceMode", {"id": a1, "maintenance": True}),
    ]:
        with pytest.raises(RpcError) as info:
            await other.call(method, params)
        assert info.value.error["data"] == {"permission": "admin", "object": {}}, method
    assert (await lab.get(a1))["enabled"] is True
    assert await lab.client.call("migration.batch.getAll") == []


async def test_a_live_batch_holds_its_memory_for_the_next_plan(lab: Lab) -> None:
    """Two batches aimed at the same host: the second sees what the first holds there."""
    lab.sim.timing.time_scale = 0.02  # the first batch is still moving when the second plans
    a3 = await lab.id_of("host", "a3")
    big, db = await lab.id_of("VM", "big-mem"), await lab.id_of("VM", "db-01")
    first = await lab.client.call("migration.batch", {"moves": [{"vm": big, "targetHost": a3}]})
    assert first["moves"][0]["status"] == "queued"
    second = await lab.client.call(
        "migration.batch", {"moves": [{"vm": db, "targetHost": a3}], "dryRun": True}
    )
    (move,) = second["moves"]
    assert move["status"] == "refused", move
    assert move["refusal"]["code"] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    done = await lab.client.call("migration.batch.wait", {"id": first["id"]}, timeout=60)
    assert done["status"] == "success"
