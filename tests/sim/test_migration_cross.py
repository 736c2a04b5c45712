"""Cross-pool migrations (Pool A -> Pool B): host.migrate_receive on the destination, then
VM.migrate_send on the source, which reaches Pool B through the address in `dest`."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.sim.helpers import raw_call
from tests.sim.test_migration_support import (
    NULL,
    Xapi,
    decode_result,
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
from xen.sim import Simulator


async def test_migrate_receive_returns_the_dest_map(sim: Simulator) -> None:
    b = sim.pool("Pool B")
    b1, migration = host_ref(b, "b1"), net_ref(b, "B migration")
    dest = await receive(sim, "Pool B", "b1", "B migration")
    assert set(dest) == {"SM", "host", "xenops", "session_id", "master"}
    session, port = dest["session_id"], sim.port
    assert dest["host"] == b1
    assert dest["xenops"] == f"http://127.0.12.1:{port}/services/xenops?session_id={session}"
    assert dest["SM"] == f"http://127.0.12.1:{port}/services/SM?session_id={session}"
    assert dest["master"] == f"http://127.0.2.1:{port}"
    # A new, working session of the destination pool.
    reply = await raw_call(b.master_url, "network.get_record", session, migration)
    assert reply["Status"] == "Success" and reply["Value"]["name_label"] == "B migration"


async def test_migrate_receive_errors(sim: Simulator) -> None:
    b = sim.pool("Pool B")
    db = b.db
    b2, migration = host_ref(b, "b2"), net_ref(b, "B migration")
    pif = next(p for p in db.get("host", b2)["PIFs"] if db.get("PIF", p)["network"] == migration)
    async with Xapi(master(sim, "Pool B")) as x:
        db.update("PIF", pif, IP="", ip_configuration_mode="DHCP")
        error = await x.fails("host.migrate_receive", b2, migration, {})
        assert error == ["INTERFACE_HAS_NO_IP", pif]
        db.update("PIF", pif, ip_configuration_mode="None")
        error = await x.fails("host.migrate_receive", b2, migration, {})
        assert error == ["PIF_HAS_NO_NETWORK_CONFIGURATION", pif]
        db.delete("PIF", pif)
        error = await x.fails("host.migrate_receive", b2, migration, {})
        assert error == ["HOST_CANNOT_ATTACH_NETWORK", b2, migration]
        error = await x.fails("host.migrate_receive", "OpaqueRef:nope", migration, {})
        assert error == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


async def test_cross_pool_migrate_send_end_to_end(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    vm = vm_ref(a, "app-02")  # running on a3, local disk, two snapshots
    snapshots = list(a.db.get("VM", vm)["snapshots"])
    (vdi,) = disks_of(a, vm)
    (vif,) = vifs_of(a, vm)
    b1, b_shared = host_ref(b, "b1"), sr_ref(b, "B shared iSCSI")
    dest = await receive(sim, "Pool B", "b1", "B migration")
    vdi_map = {vdi: b_shared}
    vif_map = {vif: net_ref(b, "B management")}
    async with Xapi(master(sim, "Pool A")) as xa, Xapi(master(sim, "Pool B")) as xb:
        before = await xa("VM.get_record", vm)
        mac = await xa("VIF.get_MAC", vif)
        source_vdis = [vdi] + [d for s in snapshots for d in disks_of(a, s)]
        source_vdi_uuids = {a.db.get("VDI", d)["uuid"] for d in source_vdis}
        b1_free = memory_free(b, b1)
        await xa("VM.assert_can_migrate", vm, dest, True, vdi_map, vif_map, {})
        task = await xa("Async.VM.migrate_send", vm, dest, True, vdi_map, vif_map, {})
        rec = await xa.wait(task)
        assert rec["status"] == "success", rec
        remote = decode_result(rec["result"])
        # The result is a Pool B ref: the same uuid, now running on b1.
        assert await xb("VM.get_by_uuid", before["uuid"]) == remote
        after = await xb("VM.get_record", remote)
        assert after["name_label"] == "app-02" and after["power_state"] == "Running"
        assert after["resident_on"] == b1 and after["current_operations"] == {}
        assert "migrate_send" in after["allowed_operations"]
        assert remote in await xb("host.get_resident_VMs", b1)
        assert memory_free(b, b1) < b1_free
        # Its disk is a new VDI (new uuid) in the mapped SR; the VIF is on the mapped network.
        disks = [v for v in after["VBDs"] if await xb("VBD.get_type", v) == "Disk"]
        (new_vdi,) = [await xb("VBD.get_VDI", v) for v in disks]
        new = await xb("VDI.get_record", new_vdi)
        assert new["SR"] == b_shared and new["uuid"] not in source_vdi_uuids
        (new_vif,) = after["VIFs"]
        assert await xb("VIF.get_network", new_vif) == vif_map[vif]
        assert await xb("VIF.get_MAC", new_vif) == mac
        # The snapshots came along, with their disks copied too.
        assert len(after["snapshots"]) == 2
        for snap in after["snapshots"]:
            snap_rec = await xb("VM.get_record", snap)
            assert snap_rec["is_a_snapshot"] and snap_rec["snapshot_of"] == remote
            for vbd in snap_rec["VBDs"]:
                snap_vdi = await xb("VDI.get_record", await xb("VBD.get_VDI", vbd))
                assert snap_vdi["SR"] == b_shared and snap_vdi["uuid"] not in source_vdi_uuids
                assert snap_vdi["snapshot_of"] == new_vdi
        # The source VM, its snapshots and its disks are gone from Pool A.
        assert await xa.fails("VM.get_record", vm) == ["HANDLE_INVALID", "VM", vm]
        for snap in snapshots:
            assert await xa.fails("VM.get_record", snap) == ["HANDLE_INVALID", "VM", snap]
        for old in source_vdis:
            assert await xa.fails("VDI.get_record", old) == ["HANDLE_INVALID", "VDI", old]
        error = await xa.fails("VM.get_by_uuid", before["uuid"])
        assert error == ["UUID_INVALID", "VM", before["uuid"]]
        assert vm not in await xa("host.get_resident_VMs", host_ref(a, "a3"))
        assert await xb("host.get_current_operations", b1) == {}


async def test_cross_pool_halted_vm_arrives_halted(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    vm = vm_ref(a, "halted-02")
    (vdi,) = disks_of(a, vm)
    (vif,) = vifs_of(a, vm)
    dest = await receive(sim, "Pool B", "b2", "B management")
    async with Xapi(master(sim, "Pool A")) as xa, Xapi(master(sim, "Pool B")) as xb:
        task = await xa(
            "Async.VM.migrate_send",
            vm,
            dest,
            False,
            {vdi: sr_ref(b, "B local b2")},
            {vif: net_ref(b, "B management")},
            {},
        )
        rec = await xa.wait(task)
        assert rec["status"] == "success", rec
        remote = decode_result(rec["result"])
        after = await xb("VM.get_record", remote)
        assert after["power_state"] == "Halted" and after["resident_on"] == NULL
        assert "start" in after["allowed_operations"]
        assert await xa.fails("VM.get_record", vm) == ["HANDLE_INVALID", "VM", vm]


async def test_cross_pool_checks(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    b_shared, b_mgmt = sr_ref(b, "B shared iSCSI"), net_ref(b, "B management")
    dest_b1 = await receive(sim, "Pool B", "b1", "B migration")
    dest_b2 = await receive(sim, "Pool B", "b2", "B migration")

    def maps(name: str) -> tuple[str, dict[str, str], dict[str, str]]:
        vm = vm_ref(a, name)
        return (
            vm,
            {d: b_shared for d in disks_of(a, vm)},
            {v: b_mgmt for v in vifs_of(a, vm)},
        )

    async with Xapi(master(sim, "Pool A")) as x:
        runner, vdi_map, vif_map = maps("runner-01")
        (vdi,) = vdi_map
        (vif,) = vif_map
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            error = await x.fails(call, runner, dest_b1, True, {}, vif_map, {})
            assert error == ["VDI_NOT_IN_MAP", vdi]
            error = await x.fails(call, runner, dest_b1, True, vdi_map, {}, {})
            assert error == ["VIF_NOT_IN_MAP", vif]
            # b2 has an older CPU: incompatible unless forced.
            error = await x.fails(call, runner, dest_b2, True, vdi_map, vif_map, {})
            assert error == [
                "VM_INCOMPATIBLE_WITH_THIS_HOST",
                runner,
                dest_b2["host"],
                "VM last booted on a CPU with features this host's CPU does not have.",
            ]
            # copy of a running VM needs force.
            error = await x.fails(call, runner, dest_b1, True, vdi_map, vif_map, {"copy": "true"})
            assert error == ["VM_BAD_POWER_STATE", runner, "halted", "running"]
        await x("VM.assert_can_migrate", runner, dest_b2, True, vdi_map, vif_map, {"force": "true"})
        # 40 GiB do not fit on b1 (32 GiB).
        big, big_vdis, big_vifs = maps("big-mem")
        error = await x.fails("VM.assert_can_migrate", big, dest_b1, True, big_vdis, big_vifs, {})
        assert error[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
        assert int(error[1]) > int(error[2]) == memory_free(b, dest_b1["host"])
        # Snapshot VIFs need a mapping too (or a mapped VIF with the same MAC).
        app02, app_vdis, app_vifs = maps("app-02")
        await x("VM.assert_can_migrate", app02, dest_b1, True, app_vdis, app_vifs, {})
        snap_vif = vifs_of(a, a.db.get("VM", app02)["snapshots"][0])[0]
        a.db.update("VIF", snap_vif, MAC="aa:00:00:00:00:01")
        error = await x.fails("VM.assert_can_migrate", app02, dest_b1, True, app_vdis, app_vifs, {})
        assert error == ["VIF_NOT_IN_MAP", snap_vif]
        # The CBT check applies to disks that move.
        cbt, cbt_vdis, cbt_vifs = maps("cbt-vm")
        error = await x.fails("VM.migrate_send", cbt, dest_b1, True, cbt_vdis, cbt_vifs, {})
        assert error == ["VDI_CBT_ENABLED", next(iter(cbt_vdis))]
        # A disabled destination host.
        b.set_host_enabled("b1", False)
        error = await x.fails("VM.migrate_send", runner, dest_b1, True, vdi_map, vif_map, {})
        assert error == ["HOST_DISABLED", dest_b1["host"]]
        b.set_host_enabled("b1", True)
        # The dest session must be valid in the destination pool. (Async: a synchronous
        # SESSION_INVALID makes the XenAPI binding log in again and retry.)
        stale = {**dest_b1, "session_id": "OpaqueRef:stale"}
        task = await x("Async.VM.migrate_send", runner, stale, True, vdi_map, vif_map, {})
        rec = await x.wait(task)
        assert rec["status"] == "failure"
        assert rec["error_info"] == ["SESSION_INVALID", "OpaqueRef:stale"]
        b.expire_sessions()
        task = await x("Async.VM.assert_can_migrate", runner, dest_b1, True, vdi_map, vif_map, {})
        rec = await x.wait(task)
        assert rec["error_info"] == ["SESSION_INVALID", dest_b1["session_id"]]
        # An unreachable destination.
        dest = await receive(sim, "Pool B", "b1", "B migration")
        b.set_reachable(False)
        error = await x.fails("VM.migrate_send", runner, dest, True, vdi_map, vif_map, {})
        assert error == ["CANNOT_CONTACT_HOST", urlsplit(dest["xenops"]).hostname]
        b.set_reachable(True)
        # Nothing half-done anywhere: the VM is untouched and can still go.
        rec = await x("VM.get_record", runner)
        assert rec["current_operations"] == {} and "migrate_send" in rec["allowed_operations"]
        task = await x("Async.VM.migrate_send", runner, dest, True, vdi_map, vif_map, {})
        assert (await x.wait(task))["status"] == "success"


async def test_cross_pool_suspended_vm_takes_its_suspend_image(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    vm = vm_ref(a, "halted-01")
    shared_a = sr_ref(a, "A shared NFS")
    image = a.db.create(
        "VDI", name_label="suspend image", SR=shared_a, type="suspend", virtual_size=2**31
    )
    a.db.update("VM", vm, power_state="Suspended", suspend_VDI=image)
    (vdi,) = disks_of(a, vm)
    (vif,) = vifs_of(a, vm)
    dest = await receive(sim, "Pool B", "b1", "B management")
    b_local = sr_ref(b, "B local b1")
    async with Xapi(master(sim, "Pool A")) as xa, Xapi(master(sim, "Pool B")) as xb:
        # Only the disk is mapped: the suspend image goes to Pool B's suspend_image_SR.
        task = await xa(
            "Async.VM.migrate_send",
            vm,
            dest,
            True,
            {vdi: b_local},
            {vif: net_ref(b, "B management")},
            {},
        )
        rec = await xa.wait(task)
        assert rec["status"] == "success", rec
        after = await xb("VM.get_record", decode_result(rec["result"]))
        assert after["power_state"] == "Suspended"
        new_image = await xb("VDI.get_record", after["suspend_VDI"])
        assert new_image["type"] == "suspend"
        assert new_image["SR"] == await xb("pool.get_suspend_image_SR", b.ref)
        assert await xa.fails("VDI.get_record", image) == ["HANDLE_INVALID", "VDI", image]
