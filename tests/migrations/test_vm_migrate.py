"""vm.migrate and vm.migrate_pool end to end: WebSocket API -> server -> XAPI simulator."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until
from tests.migrations.conftest import Lab

pytestmark = pytest.mark.timeout(90)


async def migration_of(lab: Lab, vm_id: str) -> dict:
    records = await lab.client.call("migration.getAll")
    return next(r for r in records if r["vm"] == vm_id)


async def vdi_uuids(lab: Lab, vm_id: str) -> set[str]:
    vm = await lab.get(vm_id)
    out = set()
    for vbd_id in vm["$VBDs"]:
        vbd = await lab.get(vbd_id)
        if vbd.get("VDI") and not vbd["is_cd_drive"]:
            out.add(vbd["VDI"])
    return out


async def test_intra_pool_on_shared_storage_uses_pool_migrate(lab: Lab) -> None:
    vm = await lab.id_of("VM", "web-01")
    a2 = await lab.id_of("host", "a2")
    disks_before = await vdi_uuids(lab, vm)
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": a2}) is True
    # The result came only once the VM had moved: the collection already says so.
    moved = await lab.get(vm)
    assert moved["$container"] == a2 and moved["power_state"] == "Running"
    assert await vdi_uuids(lab, vm) == disks_before
    record = await migration_of(lab, vm)
    assert record["mode"] == "pool_migrate" and record["status"] == "success"
    assert record["progress"] == 1.0 and record["user"] is not None


async def test_intra_pool_from_local_storage_falls_back_to_storage_motion(lab: Lab) -> None:
    vm = await lab.id_of("VM", "app-01")  # local disk on a2
    a3 = await lab.id_of("host", "a3")
    disks_before = await vdi_uuids(lab, vm)
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": a3}) is True
    assert (await lab.get(vm))["$container"] == a3
    disks_after = await vdi_uuids(lab, vm)
    assert disks_after and not disks_after & disks_before  # new VDIs: new uuids
    record = await migration_of(lab, vm)
    assert record["mode"] == "migrate_send" and record["status"] == "success"


async def test_cross_pool_migrate_pool_with_only_vm_and_host_uses_the_seed_defaults(
    lab: Lab,
) -> None:
    vm = await lab.id_of("VM", "web-02")
    b1 = await lab.id_of("host", "b1")
    pool_b = (await lab.get(b1))["$pool"]
    b_default_sr = (await lab.get(pool_b))["default_SR"]
    b_management = await lab.id_of("network", "B management")
    assert await lab.migrate("vm.migrate_pool", {"id": vm, "target_host_id": b1}) is True

    async def arrived() -> dict | None:
        obj = (await lab.objects(id=vm)).get(vm)
        return obj if obj and obj["$pool"] == pool_b else None

    moved = await wait_until(arrived)
    assert moved["$container"] == b1 and moved["power_state"] == "Running"
    for vdi in await vdi_uuids(lab, vm):
        assert (await lab.get(vdi))["$SR"] == b_default_sr
    for vif in moved["VIFs"]:
        assert (await lab.get(vif))["$network"] == b_management
    record = await migration_of(lab, vm)
    assert record["crossPool"] is True and record["migrationNetwork"] == b_management


async def test_cross_pool_with_explicit_maps_and_migration_network(lab: Lab) -> None:
    vm = await lab.id_of("VM", "app-02")  # local disk and two snapshots
    b1 = await lab.id_of("host", "b1")
    b_local = await lab.id_of("SR", "B local b1")
    b_migration = await lab.id_of("network", "B migration")
    vm_obj = await lab.get(vm)
    disk = next(iter(await vdi_uuids(lab, vm)))
    vif = vm_obj["VIFs"][0]
    snapshots = vm_obj["snapshots"]
    assert snapshots
    plan = await lab.client.call(
        "migration.plan",
        {
            "vm": vm,
            "targetHost": b1,
            "mapVdisSrs": {disk: b_local},
            "mapVifsNetworks": {vif: b_migration},
            "migrationNetwork": b_migration,
        },
    )
    assert plan["mode"] == "migrate_send" and plan["crossPool"] is True
    assert plan["disks"][0]["srTo"] == b_local and plan["disks"][0]["reason"] == "explicit map"
    assert plan["vifs"][0]["networkTo"] == b_migration
    assert plan["migrationNetwork"] == b_migration
    assert plan["assertCanMigrate"]["ok"] is True
    result = await lab.migrate(
        "vm.migrate",
        {
            "vm": vm,
            "targetHost": b1,
            "mapVdisSrs": {disk: b_local},
            "mapVifsNetworks": {vif: b_migration},
            "migrationNetwork": b_migration,
        },
    )
    assert result is True
    moved = await wait_until(lambda: _in_pool_of(lab, vm, b1))
    new_disks = await vdi_uuids(lab, vm)
    assert disk not in new_disks
    assert [(await lab.get(d))["$SR"] for d in new_disks] == [b_local] * len(new_disks)
    assert (await lab.get(moved["VIFs"][0]))["$network"] == b_migration

    # The snapshots left Pool A: they exist only in Pool B now (uuids kept), with the VM.
    async def snapshots_moved() -> bool:
        objects = await lab.objects(type="VM-snapshot")
        left = [objects[s]["$pool"] for s in snapshots if s in objects]
        return all(pool == moved["$pool"] for pool in left)

    await wait_until(snapshots_moved, timeout=5)


async def _in_pool_of(lab: Lab, vm: str, host: str) -> dict | None:
    obj = (await lab.objects(id=vm)).get(vm)
    host_obj = await lab.get(host)
    return obj if obj and obj["$pool"] == host_obj["$pool"] else None


async def test_changed_block_tracking_is_disabled_and_the_migration_retried(lab: Lab) -> None:
    vm = await lab.id_of("VM", "cbt-vm")
    b1 = await lab.id_of("host", "b1")
    cbt_disks = [d for d in await vdi_uuids(lab, vm) if (await lab.get(d)).get("cbt_enabled")]
    assert cbt_disks  # the lab's CBT disk
    lab.sim.pool("Pool A").reset_stats()
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": b1}) is True
    calls = lab.sim.pool("Pool A").stats()
    # XAPI refused with VDI_CBT_ENABLED once; CBT was disabled on the disk, then it moved.
    assert calls.get("VDI.disable_cbt") == len(cbt_disks)
    assert calls.get("Async.VM.migrate_send") == 2
    assert (await lab.get(vm))["$container"] == b1
    record = await migration_of(lab, vm)
    assert record["status"] == "success"


async def test_vm_objects_carry_xo_servers_memory_and_cpu_summaries(lab: Lab) -> None:
    vm = await lab.get(await lab.id_of("VM", "db-01"))
    db = lab.sim.pool("Pool A").db
    record = db.get("VM", db.by_uuid("VM", vm["id"]))
    assert vm["memory"]["size"] == 16 * 1024**3
    assert vm["memory"]["dynamic"][1] == int(record["memory_dynamic_max"])
    assert vm["CPUs"]["max"] >= vm["CPUs"]["number"] >= 1
