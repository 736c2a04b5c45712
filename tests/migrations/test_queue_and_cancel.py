"""The visible queue, cancel (queued, running, too late) and clients that go away."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.migrations.conftest import Lab
from tests.migrations.helpers import active_for, record, wait_record
from tests.server.xo_client import RpcError, XoClient

pytestmark = pytest.mark.timeout(90)


def service(lab: Lab) -> Any:
    return lab.server.state.services["migrations"]


async def test_cancel_while_queued_removes_it_from_the_queue(lab: Lab) -> None:
    service(lab).queue.per_pool = 1
    lab.sim.timing.time_scale = 0.01  # slow enough to still be queued when cancelled
    b1 = await lab.id_of("host", "b1")
    first = await lab.client.call(
        "migration.start", {"vm": await lab.id_of("VM", "web-01"), "targetHost": b1}
    )
    second = await lab.client.call(
        "migration.start", {"vm": await lab.id_of("VM", "web-02"), "targetHost": b1}
    )
    # Its place shows as soon as it is in the line (in a cluster: once Redis has it).
    queued = await wait_record(lab, second, lambda r: r["queuePosition"] == 1, 10)
    assert queued["status"] == "queued" and queued["queuePosition"] == 1
    assert await lab.client.call("migration.cancel", {"id": second}) == {
        "cancelled": True,
        "status": "cancelled",
    }
    done = await lab.client.call("migration.wait", {"id": first}, timeout=60)
    assert done["status"] == "success"
    cancelled = await record(lab, second)
    assert cancelled["status"] == "cancelled" and cancelled["xapiTask"] is None
    vm = await lab.get(await lab.id_of("VM", "web-02"))
    assert vm["$pool"] != (await lab.get(b1))["$pool"]  # never moved


async def test_cancel_while_running_rolls_back_and_vm_migrate_reports_it(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "db-01")  # the largest cross-pool migration: seconds long
    b1 = await lab.id_of("host", "b1")
    caller = await lab.connect()
    call = asyncio.create_task(caller.call("vm.migrate", {"vm": vm, "targetHost": b1}, timeout=60))
    migration_id = (await wait_until(lambda: active_for(lab, vm)))["id"]
    await wait_record(lab, migration_id, lambda r: r["phase"] == "disks" and r["xapiTask"])
    result = await lab.client.call("migration.cancel", {"id": migration_id}, timeout=30)
    assert result == {"cancelled": True, "status": "cancelled"}
    with pytest.raises(RpcError) as info:
        await call
    assert info.value.error["data"]["code"] == "TASK_CANCELLED"
    final = await record(lab, migration_id)
    assert final["status"] == "cancelled" and final["error"]["code"] == "TASK_CANCELLED"
    assert (await lab.get(vm))["$pool"] != (await lab.get(b1))["$pool"]


async def test_cancel_too_late_says_so_and_the_migration_succeeds(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    lab.sim.timing.finalise_s = 150  # a long non-cancellable tail (1.5 s real)
    vm = await lab.id_of("VM", "web-01")
    a2 = await lab.id_of("host", "a2")
    migration_id = await lab.client.call("migration.start", {"vm": vm, "targetHost": a2})

    async def past_the_point() -> bool:
        rec = await record(lab, migration_id)
        task = (
            (await lab.objects(id=rec["xapiTask"])).get(rec["xapiTask"])
            if rec["xapiTask"]
            else None
        )
        return bool(
            task
            and task["status"] == "pending"
            and not task["allowedOperations"]
            and task["progress"] > 0.5
        )

    await wait_until(past_the_point, timeout=30, interval=0.01)
    result = await lab.client.call("migration.cancel", {"id": migration_id})
    assert result["cancelled"] is False and result["outcome"] == "too_late"
    assert result["reason"].startswith("too late")
    final = await lab.client.call("migration.wait", {"id": migration_id}, timeout=60)
    assert final["status"] == "success"
    assert (await lab.get(vm))["$container"] == a2


async def test_a_client_that_disconnects_does_not_stop_its_migration(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.005
    vm = await lab.id_of("VM", "app-02")
    b1 = await lab.id_of("host", "b1")
    leaver = await XoClient.connect(lab.server.ws_url)
    await leaver.sign_in()
    await leaver.send_raw(
        {
            "id": leaver.next_id(),
            "jsonrpc": "2.0",
            "method": "vm.migrate",
            "params": {"vm": vm, "targetHost": b1},
        }
    )
    migration_id = (await wait_until(lambda: active_for(lab, vm)))["id"]
    await leaver.close()
    final = await lab.client.call("migration.wait", {"id": migration_id}, timeout=60)
    assert final["status"] == "success" and final["method"] == "vm.migrate"
    assert (await lab.get(vm))["$container"] == b1


async def test_a_second_migration_of_the_same_vm_is_refused_clearly(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    first = await lab.client.call("migration.start", {"vm": vm, "targetHost": b1})
    error = await lab.error_of("vm.migrate", {"vm": vm, "targetHost": b1})
    assert error == {
        "message": "forbidden operation: migrate",
        "code": 5,
        "data": {
            "operation": "migrate",
            "reason": f"VM {vm} is already being migrated by migration {first}",
        },
    }
    await lab.client.call("migration.cancel", {"id": first}, timeout=30)


async def test_only_an_admin_or_its_owner_may_cancel_a_migration(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    await lab.client.call(
        "user.create", {"email": "ops@example.net", "password": "pw", "permission": "none"}
    )
    other = await XoClient.connect(lab.server.ws_url)
    lab.clients.append(other)
    await other.sign_in("ops@example.net", "pw")
    vm = await lab.id_of("VM", "db-01")
    migration_id = await lab.client.call(
        "migration.start", {"vm": vm, "targetHost": await lab.id_of("host", "b1")}
    )
    # Seeing it takes a right on its VM (tests/migrations/test_acl.py); viewing is not enough
    # to cancel it.
    me = (await other.call("session.getUser"))["id"]
    await lab.client.call("acl.add", {"subject": me, "object": vm, "action": "viewer"})
    assert (await other.call("migration.get", {"id": migration_id}))["vm"] == vm
    with pytest.raises(RpcError) as info:
        await other.call("migration.cancel", {"id": migration_id})
    assert info.value.error == {
        "message": "not enough permissions",
        "code": 2,
        "data": {
            "permission": "administrate",
            "object": {"id": migration_id, "type": "migration"},
        },
    }
    result = await lab.client.call("migration.cancel", {"id": migration_id}, timeout=30)
    assert result["status"] in ("cancelled", "success")
