"""CPU feature levelling (XAPI's feature levelling 2.0, cpuid_helpers.ml): a pool's cpu_info
is the intersection of its hosts', VMs boot with the pool level and may then run on any
host of their pool; a VM that booted with more (before a weaker host joined, or in another
pool) is refused by the weaker host. All through the official XenAPI binding."""

from __future__ import annotations

from tests.sim.test_migration_support import (
    Xapi,
    decode_result,
    disks_of,
    host_ref,
    master,
    net_ref,
    receive,
    sr_ref,
    vifs_of,
    vm_ref,
)
from xen.sim import Simulator
from xen.sim.cpuid import MISSING_FEATURES, intersect, is_subset
from xen.sim.lab import FULL_FEATURES

OLD = "0fc9fbff-80b82221-2c100800-00000001-00000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000"
LEVELS = ("features_pv", "features_hvm", "features_pv_host", "features_hvm_host")


def test_feature_arithmetic() -> None:
    # Sets of different lengths: the shorter one is zero-extended (Cpuid_helpers.intersect).
    assert intersect(["0000000f-000000f0", "00000003"]) == "00000003-00000000"
    assert intersect(["", "0000000f"]) == "0000000f"  # the empty set is the identity
    assert is_subset("00000003", "0000000f-00000001")
    assert not is_subset("00000003-00000001", "0000000f")
    assert intersect([FULL_FEATURES, OLD]) == OLD
    assert intersect(["sse sse2 avx", "sse2 sse"]) == "sse sse2"  # hand-written flag names


async def test_pool_cpu_info_is_the_intersection_of_its_hosts(sim: Simulator) -> None:
    async with Xapi(master(sim, "Pool B")) as x:
        (pool,) = await x("pool.get_all")
        info = await x("pool.get_cpu_info", pool)
        hosts = [await x("host.get_cpu_info", h) for h in await x("host.get_all")]
    b1, b2 = sorted(hosts, key=lambda h: int(h["model"]), reverse=True)  # b1: model 143
    assert b1["features_hvm"] == FULL_FEATURES and b2["features_hvm"] == OLD
    for key in LEVELS:
        assert info[key] == intersect([b1[key], b2[key]]) == OLD
    assert info["vendor"] == "GenuineIntel"
    assert int(info["cpu_count"]) == int(b1["cpu_count"]) + int(b2["cpu_count"])
    assert int(info["socket_count"]) == int(b1["socket_count"]) + int(b2["socket_count"])
    async with Xapi(master(sim, "Pool A")) as x:
        (pool,) = await x("pool.get_all")
        assert (await x("pool.get_cpu_info", pool))["features_hvm"] == FULL_FEATURES


async def test_a_pool_b_vm_booted_with_the_pool_level_moves_b1_to_b2_live(sim: Simulator) -> None:
    b = sim.pool("Pool B")
    vm, b1, b2 = vm_ref(b, "b-runner"), host_ref(b, "b1"), host_ref(b, "b2")  # shared disk
    async with Xapi(master(sim, "Pool B")) as x:
        (pool,) = await x("pool.get_all")
        level = (await x("pool.get_cpu_info", pool))["features_hvm"]
        flags = await x("VM.get_last_boot_CPU_flags", vm)
        assert flags == {"vendor": "GenuineIntel", "features": level}
        assert await x("VM.get_resident_on", vm) == b1
        task = await x("Async.VM.pool_migrate", vm, b2, {"live": "true"})
        rec = await x.wait(task)
        assert rec["status"] == "success", rec
        assert await x("VM.get_resident_on", vm) == b2
        assert await x("VM.get_power_state", vm) == "Running"
        # And back: any host of the pool will do.
        assert (await x.wait(await x("Async.VM.pool_migrate", vm, b1, {})))["status"] == "success"


async def test_a_vm_booted_before_a_weaker_host_joined_is_refused_by_it(sim: Simulator) -> None:
    b = sim.pool("Pool B")
    vm, b2 = vm_ref(b, "b-db-01"), host_ref(b, "b2")
    async with Xapi(master(sim, "Pool B")) as x:
        (pool,) = await x("pool.get_all")
        level = (await x("pool.get_cpu_info", pool))["features_hvm"]
        flags = await x("VM.get_last_boot_CPU_flags", vm)
        assert flags["features"] == FULL_FEATURES and not is_subset(flags["features"], level)
        error = await x.fails("VM.pool_migrate", vm, b2, {})
        assert error == ["VM_INCOMPATIBLE_WITH_THIS_HOST", vm, b2, MISSING_FEATURES]
        dest = await x("host.migrate_receive", b2, net_ref(b, "B management"), {})
        vdi_map = {vdi: sr_ref(b, "B shared iSCSI") for vdi in disks_of(b, vm)}
        error = await x.fails("VM.assert_can_migrate", vm, dest, True, vdi_map, {}, {})
        assert error == ["VM_INCOMPATIBLE_WITH_THIS_HOST", vm, b2, MISSING_FEATURES]
        assert await x("VM.get_resident_on", vm) == host_ref(b, "b1")  # nothing moved


async def test_a_vm_from_another_pool_keeps_its_flags_and_b2_refuses_it(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    vm = vm_ref(a, "runner-01")  # booted in Pool A (full features), shared disk
    (vdi,) = disks_of(a, vm)
    (vif,) = vifs_of(a, vm)
    dest = await receive(sim, "Pool B", "b1", "B management")
    vdi_map = {vdi: sr_ref(b, "B shared iSCSI")}
    vif_map = {vif: net_ref(b, "B management")}
    async with Xapi(master(sim, "Pool A")) as xa, Xapi(master(sim, "Pool B")) as xb:
        task = await xa("Async.VM.migrate_send", vm, dest, True, vdi_map, vif_map, {})
        rec = await xa.wait(task)
        assert rec["status"] == "success", rec
        remote = decode_result(rec["result"])
        flags = await xb("VM.get_last_boot_CPU_flags", remote)
        assert flags["features"] == FULL_FEATURES  # a migration keeps the boot-time flags
        b2 = host_ref(b, "b2")
        error = await xb.fails("VM.pool_migrate", remote, b2, {})
        assert error == ["VM_INCOMPATIBLE_WITH_THIS_HOST", remote, b2, MISSING_FEATURES]
        # Forcing skips the CPU check, as in XAPI.
        task = await xb("Async.VM.pool_migrate", remote, b2, {"force": "true"})
        assert (await xb.wait(task))["status"] == "success"
