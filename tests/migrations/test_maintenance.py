"""host.setMaintenanceMode with xo-server's contract: true disables the host and moves its
running VMs away (all or nothing, the host enabled again on failure, XAPI's error), with
vmsToForceMigrate unblocking migration first; false enables the host."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import wait_until
from tests.migrations.batch_helpers import running_vms_on
from tests.migrations.conftest import Lab
from xen.sim.registry import Fault

pytestmark = pytest.mark.timeout(120)


async def test_maintenance_moves_every_running_vm_away_and_false_enables_the_host(
    lab: Lab,
) -> None:
    a2 = await lab.id_of("host", "a2")
    assert await running_vms_on(lab, a2) == ["app-01", "runner-01", "runner-03", "web-02"]
    result = await lab.client.call(
        "host.setMaintenanceMode", {"id": a2, "maintenance": True}, timeout=60
    )
    assert result is True
    host = await lab.get(a2)
    assert host["enabled"] is False
    assert await running_vms_on(lab, a2) == []
    halted = await lab.get(await lab.id_of("VM", "halted-02"))
    assert halted["power_state"] == "Halted"  # only running VMs leave, as XAPI's evacuate
    # The evacuation ran as a batch, visible like any other.
    (batch,) = await lab.client.call("migration.batch.getAll")
    assert batch["kind"] == "maintenance" and batch["host"] == a2
    assert batch["status"] == "success" and batch["method"] == "host.setMaintenanceMode"
    assert {m["targetHostName"] for m in batch["moves"]} <= {"a1", "a3"}

    assert await lab.client.call("host.setMaintenanceMode", {"id": a2, "maintenance": False})
    assert (await lab.get(a2))["enabled"] is True


async def test_a_blocked_vm_fails_as_with_xo_server_then_vms_to_force_migrate_moves_it(
    lab: Lab,
) -> None:
    """xo-web's flow: the call fails with "operation blocked", xo-web asks the user, then
    calls again with the blocked VMs in vmsToForceMigrate."""
    a3 = await lab.id_of("host", "a3")
    locked = await lab.id_of("VM", "locked-vm")
    before = await running_vms_on(lab, a3)
    assert "locked-vm" in before
    error = await lab.error_of("host.setMaintenanceMode", {"id": a3, "maintenance": True})
    assert error == {
        "message": "operation blocked",
        "code": 19,
        "data": {"objectId": locked, "code": "Locked by the administrator"},
    }
    # All or nothing: the host is enabled again and nothing moved.
    assert (await lab.get(a3))["enabled"] is True
    assert await running_vms_on(lab, a3) == before
    assert await lab.client.call("migration.getAll") == []

    result = await lab.client.call(
        "host.setMaintenanceMode",
        {"id": a3, "maintenance": True, "vmsToForceMigrate": [locked]},
        timeout=60,
    )
    assert result is True
    assert (await lab.get(a3))["enabled"] is False
    assert await running_vms_on(lab, a3) == []
    blocked = (await lab.get(locked))["blockedOperations"]
    assert "pool_migrate" not in blocked and "migrate_send" not in blocked


async def test_vms_that_cannot_leave_fail_it_and_the_host_stays_enabled(lab: Lab) -> None:
    b1 = await lab.id_of("host", "b1")
    before = await running_vms_on(lab, b1)
    error = await lab.error_of("host.setMaintenanceMode", {"id": b1, "maintenance": True})
    # An admin gets XAPI's error, as from xo-server's host.evacuate.
    assert error["code"] == -32000
    assert error["data"]["code"] in (
        "HOST_NOT_ENOUGH_FREE_MEMORY",
        "VM_INCOMPATIBLE_WITH_THIS_HOST",
    )
    assert (await lab.get(b1))["enabled"] is True
    assert await running_vms_on(lab, b1) == before


async def test_a_move_failing_midway_enables_the_host_again_with_xapis_error(lab: Lab) -> None:
    a2 = await lab.id_of("host", "a2")
    lab.sim.pool("Pool A").add_fault(
        Fault(
            kind="migration",
            vm="web-02",
            phase="memory",
            code="VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED",
        )
    )
    error = await lab.error_of(
        "host.setMaintenanceMode", {"id": a2, "maintenance": True}, timeout=60
    )
    assert error["data"]["code"] == "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED"
    assert (await lab.get(a2))["enabled"] is True
    assert "web-02" in await running_vms_on(lab, a2)
    (batch,) = await lab.client.call("migration.batch.getAll")
    assert batch["status"] == "failure" and batch["stopOnError"] is True


async def test_bad_input_gets_a_clear_error_and_changes_nothing(lab: Lab) -> None:
    a1 = await lab.id_of("host", "a1")
    web = await lab.id_of("VM", "web-01")
    cases = [
        ({"id": a1}, 10),
        ({"id": a1, "maintenance": "yes"}, 10),
        ({"id": web, "maintenance": True}, 1),
        ({"id": "nope", "maintenance": True}, 1),
        ({"id": a1, "maintenance": True, "vmsToForceMigrate": ["nope"]}, 1),
        ({"id": a1, "maintenance": True, "vmsToForceMigrate": [a1]}, 1),
        ({"id": a1, "maintenance": True, "vmsToForceMigrate": "all"}, 10),
    ]
    for params, code in cases:
        error = await lab.error_of("host.setMaintenanceMode", params)
        assert error["code"] == code, (params, error)
    assert (await lab.get(a1))["enabled"] is True
    assert await lab.client.call("migration.getAll") == []


async def test_a_second_call_while_the_host_is_evacuated_is_refused(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01  # app-01's storage motion: about a second
    a2 = await lab.id_of("host", "a2")
    first = asyncio.create_task(
        lab.client.call("host.setMaintenanceMode", {"id": a2, "maintenance": True}, timeout=60)
    )

    async def evacuating() -> bool:
        batches = await lab.client.call("migration.batch.getAll")
        return any(b["status"] == "running" for b in batches)

    await wait_until(evacuating)
    error = await lab.error_of("host.setMaintenanceMode", {"id": a2, "maintenance": True})
    assert error["code"] == 5 and "already being evacuated" in error["data"]["reason"]
    assert await first is True
    assert (await lab.get(a2))["enabled"] is False  # the refused call changed nothing
    assert await running_vms_on(lab, a2) == []
