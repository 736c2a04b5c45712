"""Every vm.migrate error path, with the exact wire shape xo-cli and xo-web rely on."""

from __future__ import annotations

import asyncio

import pytest
import XenAPI

from tests.migrations.conftest import Lab

pytestmark = pytest.mark.timeout(60)


async def test_halted_vm_gets_xo_bad_power_state(lab: Lab) -> None:
    vm = await lab.id_of("VM", "halted-01")
    a2 = await lab.id_of("host", "a2")
    plan = await lab.client.call("migration.plan", {"vm": vm, "targetHost": a2})
    assert [b["code"] for b in plan["blockers"]] == ["VM_BAD_POWER_STATE"]
    assert "storage motion" in plan["blockers"][0]["message"]
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": a2})
    assert error == {
        "message": "VM state is halted but should be running",
        "code": 13,
        "data": {"objectId": vm, "expected": "running", "actual": "halted"},
    }


async def test_template_is_not_a_vm(lab: Lab) -> None:
    template = await lab.id_of("VM-template", "Debian 12 template")
    a2 = await lab.id_of("host", "a2")
    error = await lab.error_of("vm.migrate", {"vm": template, "targetHost": a2})
    assert error == {
        "message": f"no such VM {template}",
        "code": 1,
        "data": {"id": template, "type": "VM"},
    }


async def test_not_enough_memory_is_a_xapi_error_with_code_and_params(lab: Lab) -> None:
    vm = await lab.id_of("VM", "big-mem")  # 40 GiB, b1 has 32 GiB
    b1 = await lab.id_of("host", "b1")
    plan = await lab.client.call("migration.plan", {"vm": vm, "targetHost": b1})
    assert plan["memory"]["ok"] is False
    assert [b["code"] for b in plan["blockers"]] == ["HOST_NOT_ENOUGH_FREE_MEMORY"]
    assert plan["assertCanMigrate"]["error"]["code"] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": b1})
    assert error["code"] == -32000
    assert error["data"]["code"] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    needed, available = error["data"]["params"]
    assert int(needed) > int(available)
    assert error["message"].startswith("HOST_NOT_ENOUGH_FREE_MEMORY(")
    # Nothing moved.
    assert (await lab.get(vm))["$pool"] != (await lab.get(b1))["$pool"]


async def test_cpu_incompatible_fails_without_force_and_passes_with_it(lab: Lab) -> None:
    vm = await lab.id_of("VM", "web-01")
    b2 = await lab.id_of("host", "b2")  # older CPU
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": b2})
    assert error["code"] == -32000
    assert error["data"]["code"] == "VM_INCOMPATIBLE_WITH_THIS_HOST"  # xo-web keys on this
    records = await lab.client.call("migration.getAll")
    failed = next(r for r in records if r["vm"] == vm)
    assert failed["status"] == "failure" and "force=true" in failed["error"]["hint"]
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": b2, "force": True}) is True
    assert (await lab.get(vm))["$container"] == b2


@pytest.mark.parametrize(
    ("param", "xo_type"),
    [("vm", "VM"), ("targetHost", "host"), ("sr", "SR"), ("migrationNetwork", "network")],
)
async def test_unknown_objects_get_no_such_object(lab: Lab, param: str, xo_type: str) -> None:
    params = {
        "vm": await lab.id_of("VM", "web-01"),
        "targetHost": await lab.id_of("host", "b1"),
    }
    params[param] = "00000000-0000-0000-0000-000000000000"
    error = await lab.error_of("vm.migrate", params)
    assert error == {
        "message": f"no such {xo_type} 00000000-0000-0000-0000-000000000000",
        "code": 1,
        "data": {"id": "00000000-0000-0000-0000-000000000000", "type": xo_type},
    }
    assert await lab.client.call("migration.getAll") == []  # nothing was started


async def test_unknown_vdi_in_map_gets_no_such_object(lab: Lab) -> None:
    vm = await lab.id_of("VM", "web-01")
    b1 = await lab.id_of("host", "b1")
    sr = await lab.id_of("SR", "B local b1")
    error = await lab.error_of(
        "vm.migrate", {"vm": vm, "targetHost": b1, "mapVdisSrs": {"nope": sr}}
    )
    assert error["code"] == 1 and error["message"] == "no such VDI,VDI-snapshot nope"


async def test_bad_params_get_invalid_parameters_as_xo_cli_prints_them(lab: Lab) -> None:
    vm = await lab.id_of("VM", "web-01")
    error = await lab.error_of("vm.migrate", {"id": vm, "host_id": "x"})
    assert error["code"] == 10 and error["message"] == "invalid parameters"
    shown = {(e["instancePath"], e["message"]) for e in error["data"]["errors"]}
    assert ("", "must have required property 'vm'") in shown
    assert ("", "must have required property 'targetHost'") in shown
    assert ("", "must NOT have additional properties") in shown
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": vm, "force": "true"})
    assert [(e["instancePath"], e["message"]) for e in error["data"]["errors"]] == [
        ("/force", "must be boolean")
    ]
    error = await lab.error_of("vm.migrate_pool", {"id": "", "target_host_id": vm})
    assert error["data"]["errors"][0]["instancePath"] == "/id"


async def test_blocked_operation_gets_operation_blocked(lab: Lab) -> None:
    vm = await lab.id_of("VM", "locked-vm")
    a1 = await lab.id_of("host", "a1")
    plan = await lab.client.call("migration.plan", {"vm": vm, "targetHost": a1})
    assert plan["blockers"][0]["code"] == "OPERATION_BLOCKED"
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": a1})
    assert error["code"] == 19 and error["message"] == "operation blocked"
    assert error["data"]["objectId"] == vm


async def test_missing_default_sr_is_a_clear_error_and_changes_nothing(lab: Lab) -> None:
    # Unset Pool A's default SR the way an admin would: through XAPI.
    pool_a = lab.sim.manifest()["pools"][0]
    session = XenAPI.Session(pool_a["master"])
    await asyncio.to_thread(
        session.xenapi.login_with_password, pool_a["username"], pool_a["password"]
    )
    pool_ref = (await asyncio.to_thread(session.xenapi.pool.get_all))[0]
    await asyncio.to_thread(session.xenapi.pool.set_default_SR, pool_ref, "OpaqueRef:NULL")
    pool_id = await lab.id_of("pool", "Pool A")

    async def unset() -> bool:
        return (await lab.get(pool_id)).get("default_SR") is None

    from tests.helpers import wait_until

    await wait_until(unset)
    vm = await lab.id_of("VM", "app-01")  # local disk on a2: a3 cannot see it
    a3 = await lab.id_of("host", "a3")
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": a3})
    assert error["code"] == -32000
    assert error["message"] == "This operation requires a default SR to be set on the pool Pool A"
    assert (await lab.get(vm))["$container"] != a3
    records = await lab.client.call("migration.getAll")
    assert records[0]["error"]["code"] == "NO_DEFAULT_SR"
