"""Intra-pool migrations: VM.pool_migrate (XenMotion) and VM.migrate_send within Pool A
(storage motion), with the checks of xapi.md 3.3 / 3.4 in order and their exact errors."""

from __future__ import annotations

from tests.sim.test_migration_support import (
    NULL,
    Xapi,
    decode_result,
    disks_of,
    host_ref,
    master,
    memory_free,
    net_ref,
    sr_ref,
    vifs_of,
    vm_ref,
)
from xen.sim import Simulator

CONTROL_DOMAIN = "This operation is not allowed on a control domain"


async def test_pool_migrate_moves_a_running_vm(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    vm, a1, a2 = vm_ref(pool, "web-01"), host_ref(pool, "a1"), host_ref(pool, "a2")
    async with Xapi(master(sim, "Pool A")) as x:
        before = await x("VM.get_record", vm)
        a1_free, a2_free = memory_free(pool, a1), memory_free(pool, a2)
        messages_before = set(await x("message.get_all"))
        task = await x("Async.VM.pool_migrate", vm, a2, {})
        rec = await x.wait(task)
        assert rec["status"] == "success", rec
        assert rec["result"] == "<value></value>" and rec["progress"] == 1.0
        after = await x("VM.get_record", vm)
        assert after["uuid"] == before["uuid"] and after["power_state"] == "Running"
        assert before["resident_on"] == a1 and after["resident_on"] == a2
        assert after["domid"] != before["domid"]
        assert after["current_operations"] == {}
        assert after["scheduled_to_be_resident_on"] == NULL
        assert "pool_migrate" in after["allowed_operations"]
        assert vm in await x("host.get_resident_VMs", a2)
        assert vm not in await x("host.get_resident_VMs", a1)
        assert await x("host.get_current_operations", a2) == {}
        # Disks stay where they are (shared storage).
        assert after["VBDs"] == before["VBDs"]
        # The VM's memory moved from a1 to a2.
        moved = after["memory_target"]
        assert memory_free(pool, a1) >= a1_free + int(moved)
        assert memory_free(pool, a2) <= a2_free - int(moved)
        new_messages = set(await x("message.get_all")) - messages_before
        records = [await x("message.get_record", m) for m in new_messages]
        assert [(m["name"], m["obj_uuid"]) for m in records] == [("VM_MIGRATED", before["uuid"])]


async def test_pool_migrate_of_a_local_disk_vm_requires_sr(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    vm = vm_ref(pool, "app-01")  # its disk is on "A local a2"
    async with Xapi(master(sim, "Pool A")) as x:
        error = await x.fails("VM.pool_migrate", vm, host_ref(pool, "a3"), {})
        assert error == ["VM_REQUIRES_SR", vm, sr_ref(pool, "A local a2")]
        # Nothing was left behind by the failed attempt.
        rec = await x("VM.get_record", vm)
        assert rec["current_operations"] == {} and rec["resident_on"] == host_ref(pool, "a2")
        assert "pool_migrate" in rec["allowed_operations"]
        assert await x("host.get_current_operations", host_ref(pool, "a3")) == {}


async def test_storage_motion_within_the_pool(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    vm, a3 = vm_ref(pool, "app-01"), host_ref(pool, "a3")
    shared, local = sr_ref(pool, "A shared NFS"), sr_ref(pool, "A local a2")
    (old_vdi,) = disks_of(pool, vm)
    async with Xapi(master(sim, "Pool A")) as x:
        old = await x("VDI.get_record", old_vdi)
        dest = {"host": a3}  # intra-pool: dest["host"] is a host of this pool
        await x("VM.assert_can_migrate", vm, dest, True, {old_vdi: shared}, {}, {})
        task = await x("Async.VM.migrate_send", vm, dest, True, {old_vdi: shared}, {}, {})
        rec = await x.wait(task)
        assert rec["status"] == "success", rec
        assert decode_result(rec["result"]) == vm  # the same VM ref
        after = await x("VM.get_record", vm)
        assert after["resident_on"] == a3 and after["power_state"] == "Running"
        (vbd,) = [v for v in after["VBDs"] if v in old["VBDs"]]
        new_vdi = await x("VBD.get_VDI", vbd)
        new = await x("VDI.get_record", new_vdi)
        assert new_vdi != old_vdi and new["uuid"] != old["uuid"]
        assert new["SR"] == shared and new["virtual_size"] == old["virtual_size"]
        assert await x.fails("VDI.get_record", old_vdi) == ["HANDLE_INVALID", "VDI", old_vdi]
        assert old_vdi not in await x("SR.get_VDIs", local)
        assert new_vdi in await x("SR.get_VDIs", shared)


async def test_migrate_send_to_its_own_sr_copies_nothing(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    vm, a3, shared = vm_ref(pool, "web-02"), host_ref(pool, "a3"), sr_ref(pool, "A shared NFS")
    (vdi,) = disks_of(pool, vm)
    async with Xapi(master(sim, "Pool A")) as x:
        vdis_before = set(await x("VDI.get_all"))
        # A synchronous call returns the VM ref itself.
        assert await x("VM.migrate_send", vm, {"host": a3}, True, {vdi: shared}, {}, {}) == vm
        assert await x("VM.get_resident_on", vm) == a3
        assert disks_of(pool, vm) == [vdi]
        assert set(await x("VDI.get_all")) == vdis_before


async def test_pool_migrate_checks_in_xapi_order(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    db = pool.db
    a1, a2, a3 = (host_ref(pool, h) for h in ("a1", "a2", "a3"))
    web01 = vm_ref(pool, "web-01")
    async with Xapi(master(sim, "Pool A")) as x:
        # The CPU check comes first, unless forced.
        db.update("VM", web01, last_boot_CPU_flags={"vendor": "AuthenticAMD", "features": "1"})
        assert await x.fails("VM.pool_migrate", web01, a2, {}) == [
            "VM_INCOMPATIBLE_WITH_THIS_HOST",
            web01,
            a2,
            "VM last booted on a host which had a CPU from a different vendor.",
        ]
        db.update(
            "VM",
            web01,
            last_boot_CPU_flags={"vendor": "GenuineIntel", "features": "ffffffff-ffffffff"},
        )
        error = await x.fails("VM.pool_migrate", web01, a2, {})
        assert error[0] == "VM_INCOMPATIBLE_WITH_THIS_HOST" and "features" in error[3]
        # Blocked operations come before the power state.
        locked = vm_ref(pool, "locked-vm")
        assert await x.fails("VM.pool_migrate", locked, a1, {}) == [
            "OPERATION_BLOCKED",
            locked,
            "Locked by the administrator",
        ]
        halted = vm_ref(pool, "halted-01")
        assert await x.fails("VM.pool_migrate", halted, a2, {}) == [
            "VM_BAD_POWER_STATE",
            halted,
            "running",
            "halted",
        ]
        # Templates are halted: the power state check fires first (xapi.md 3.3).
        template = vm_ref(pool, "Debian 12 template")
        error = await x.fails("VM.pool_migrate", template, a2, {})
        assert error == ["VM_BAD_POWER_STATE", template, "running", "halted"]
        dom0 = db.get("host", a1)["control_domain"]
        assert await x.fails("VM.pool_migrate", dom0, a2, {}) == [
            "OPERATION_NOT_ALLOWED",
            CONTROL_DOMAIN,
        ]
        # Destination checks: live, enabled, storage, network, memory.
        runner = vm_ref(pool, "runner-01")  # on a2, shared disk, 1 GiB
        pool.set_host_enabled("a3", False)
        assert await x.fails("VM.pool_migrate", runner, a3, {}) == ["HOST_DISABLED", a3]
        pool.set_host_offline("a3", True)
        assert await x.fails("VM.pool_migrate", runner, a3, {}) == ["HOST_NOT_LIVE"]
        pool.set_host_offline("a3", False)
        pool.set_host_enabled("a3", True)
        mgmt = net_ref(pool, "A management")
        (vif,) = vifs_of(pool, runner)
        assert db.get("VIF", vif)["network"] == mgmt
        a3_pif = next(p for p in db.get("host", a3)["PIFs"] if db.get("PIF", p)["network"] == mgmt)
        pif_record = db.record("PIF", a3_pif)
        db.delete("PIF", a3_pif)
        assert await x.fails("VM.pool_migrate", runner, a3, {}) == [
            "VM_REQUIRES_NETWORK",
            runner,
            mgmt,
        ]
        db.create("PIF", **pif_record)
        web02 = vm_ref(pool, "web-02")  # 4 GiB; a1 holds big-mem and db-01
        needed = str(
            db.get("VM", web02)["memory_dynamic_min"] + db.get("VM", web02)["memory_overhead"]
        )
        assert await x.fails("VM.pool_migrate", web02, a1, {}) == [
            "HOST_NOT_ENOUGH_FREE_MEMORY",
            needed,
            str(memory_free(pool, a1)),
        ]
        # The source host must answer the forwarded call.
        pool.set_host_offline("a2", True)
        assert await x.fails("VM.pool_migrate", runner, a3, {}) == ["HOST_OFFLINE", a2]
        pool.set_host_offline("a2", False)
        # Every failure left the VMs as they were.
        for vm in (web01, locked, runner, web02):
            assert (await x("VM.get_record", vm))["current_operations"] == {}
        assert await x("host.get_current_operations", a3) == {}
        # force skips the CPU check.
        task = await x("Async.VM.pool_migrate", web01, a2, {"force": "true"})
        assert (await x.wait(task))["status"] == "success"
        assert await x("VM.get_resident_on", web01) == a2


async def test_migrate_send_checks_within_the_pool(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    db = pool.db
    a1, a3 = host_ref(pool, "a1"), host_ref(pool, "a3")
    shared, local_a3 = sr_ref(pool, "A shared NFS"), sr_ref(pool, "A local a3")
    app01 = vm_ref(pool, "app-01")
    (vdi,) = disks_of(pool, app01)
    dest = {"host": a3}
    async with Xapi(master(sim, "Pool A")) as x:
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            assert await x.fails(call, app01, dest, True, {}, {}, {}) == ["VDI_NOT_IN_MAP", vdi]
            (vif,) = vifs_of(pool, app01)
            mgmt = net_ref(pool, "A management")
            error = await x.fails(call, app01, dest, True, {vdi: shared}, {vif: mgmt}, {})
            assert error[0] == "OPERATION_NOT_ALLOWED" and "VIF mapping" in error[1]
            error = await x.fails(call, app01, dest, True, {vdi: shared}, {}, {"copy": "true"})
            assert error[0] == "OPERATION_NOT_ALLOWED" and "Copy mode" in error[1]
            # A local SR of another host is not reachable from a1.
            runner = vm_ref(pool, "runner-01")
            (rvdi,) = disks_of(pool, runner)
            assert await x.fails(call, runner, {"host": a1}, True, {rvdi: local_a3}, {}, {}) == [
                "VM_REQUIRES_SR",
                runner,
                local_a3,
            ]
        cbt = vm_ref(pool, "cbt-vm")
        (cbt_vdi,) = disks_of(pool, cbt)
        a2, local_a2 = host_ref(pool, "a2"), sr_ref(pool, "A local a2")
        error = await x.fails(
            "VM.migrate_send", cbt, {"host": a2}, True, {cbt_vdi: local_a2}, {}, {}
        )
        assert error == ["VDI_CBT_ENABLED", cbt_vdi]
        # Snapshots and default templates cannot be moved; a custom template can.
        snap = vm_ref(pool, "app-02 weekly")
        error = await x.fails("VM.migrate_send", snap, dest, True, {}, {}, {})
        assert error == ["VM_IS_SNAPSHOT", snap, "migrate_send"]
        template = vm_ref(pool, "Debian 12 template")
        db.update("VM", template, is_default_template=True)
        error = await x.fails("VM.migrate_send", template, dest, True, {}, {}, {})
        assert error == ["VM_IS_TEMPLATE", template, "migrate_send"]
        db.update("VM", template, is_default_template=False, power_state="Paused")
        error = await x.fails("VM.migrate_send", template, dest, True, {}, {}, {})
        assert error == ["VM_BAD_POWER_STATE", template, "halted, suspended, running", "paused"]
        db.update("VM", template, power_state="Halted")
        (tvdi,) = disks_of(pool, template)
        task = await x("Async.VM.migrate_send", template, dest, True, {tvdi: local_a3}, {}, {})
        assert (await x.wait(task))["status"] == "success"
        assert db.get("VDI", disks_of(pool, template)[0])["SR"] == local_a3
        # Parameter counts: 6 to 8 for migrate_send, 6 to 7 for assert_can_migrate.
        args = (app01, dest, True, {vdi: shared}, {})
        error = await x.fails("VM.migrate_send", *args)
        assert error == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.migrate_send", "6", "5"]
        error = await x.fails("VM.assert_can_migrate", *args, {}, {}, {})
        assert error[:2] == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.assert_can_migrate"]
        await x("VM.assert_can_migrate", *args, {}, {})  # 7 args: vgpu_map given
        task = await x("Async.VM.migrate_send", *args, {}, {}, {})  # all 8
        assert (await x.wait(task))["status"] == "success"


async def test_storage_motion_takes_the_snapshots_along(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    vm, a2, shared = vm_ref(pool, "app-02"), host_ref(pool, "a2"), sr_ref(pool, "A shared NFS")
    snapshots = pool.db.get("VM", vm)["snapshots"]
    (vdi,) = disks_of(pool, vm)
    old_snap_vdis = [d for s in snapshots for d in disks_of(pool, s)]
    assert len(old_snap_vdis) == 2
    async with Xapi(master(sim, "Pool A")) as x:
        # Only the VM's own disk is mapped: its snapshots follow their parent's SR.
        task = await x("Async.VM.migrate_send", vm, {"host": a2}, True, {vdi: shared}, {}, {})
        assert (await x.wait(task))["status"] == "success"
        (new_vdi,) = disks_of(pool, vm)
        assert await x("VDI.get_SR", new_vdi) == shared
        for snap in snapshots:
            (snap_vdi,) = [await x("VBD.get_VDI", v) for v in await x("VM.get_VBDs", snap)]
            assert snap_vdi not in old_snap_vdis
            assert await x("VDI.get_SR", snap_vdi) == shared
            assert await x("VDI.get_snapshot_of", snap_vdi) == new_vdi
        for old in [vdi, *old_snap_vdis]:
            assert await x.fails("VDI.get_record", old) == ["HANDLE_INVALID", "VDI", old]
