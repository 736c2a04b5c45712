"""host.disable / host.enable on the wire (maintenance mode): a disabled host refuses
arriving VMs with HOST_DISABLED and keeps its own running; enabling it undoes that."""

from __future__ import annotations

from tests.sim.test_migration_support import Xapi, host_ref, master, vm_ref
from xen.sim import Simulator


async def test_disable_and_enable_a_host(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    a3, runner = host_ref(pool, "a3"), vm_ref(pool, "runner-01")  # runner-01 runs on a2
    async with Xapi(master(sim, "Pool A")) as x:
        assert await x("host.disable", a3) == ""
        assert await x("host.get_enabled", a3) is False
        assert await x.fails("VM.pool_migrate", runner, a3, {}) == ["HOST_DISABLED", a3]
        for vm in await x("host.get_resident_VMs", a3):
            assert await x("VM.get_power_state", vm) == "Running"
        task = await x("Async.host.enable", a3)
        assert (await x.wait(task))["status"] == "success"
        assert await x("host.get_enabled", a3) is True
        task = await x("Async.VM.pool_migrate", runner, a3, {})
        assert (await x.wait(task))["status"] == "success"
        assert (await x.fails("host.disable", "OpaqueRef:nope"))[0] == "HANDLE_INVALID"
