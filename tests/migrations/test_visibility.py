"""What an xo-server client sees during vm.migrate (xo-server-api.md 4.4, must-match item 10):
the XAPI task enters with progress and leaves when done, the VM shows the operation and then
its new host; and `task.cancel {id}` on that task stops the migration, as in xo-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.migrations.conftest import Lab
from tests.server.xo_client import RpcError, XoClient

pytestmark = pytest.mark.timeout(60)


async def collect(watcher: XoClient, until: Any) -> list[dict[str, Any]]:
    """Every `all` message until `until(message params)` is true."""
    messages = []
    while True:
        params = (await watcher.next_notification(timeout=30))["params"]
        messages.append(params)
        if until(params):
            return messages


async def test_task_and_vm_updates_are_pushed_like_xo_server(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    watcher = await lab.connect()
    vm = await lab.id_of("VM", "web-01")
    a2 = await lab.id_of("host", "a2")
    call = asyncio.create_task(lab.migrate("vm.migrate", {"vm": vm, "targetHost": a2}))

    def vm_arrived(params: dict[str, Any]) -> bool:
        obj = params["items"].get(vm)
        return params["type"] == "enter" and bool(obj) and obj["$container"] == a2

    messages = await collect(watcher, vm_arrived)
    assert await call is True
    tasks = [
        obj
        for m in messages
        if m["type"] == "enter"
        for obj in m["items"].values()
        if obj["type"] == "task" and obj["name_label"] == "Async.VM.pool_migrate"
    ]
    assert tasks, "the XAPI task was pushed"
    task_id = tasks[0]["id"]
    pending = [t for t in tasks if t["status"] == "pending"]
    assert pending and pending[0]["$host"] and isinstance(pending[0]["created"], int | float)
    assert pending[0]["finished"] is None
    assert any(t["progress"] > 0 for t in pending)
    vm_states = [m["items"][vm] for m in messages if m["type"] == "enter" and vm in m["items"]]
    assert any(task_id in v["current_operations"] for v in vm_states)
    assert vm_states[-1]["$container"] == a2
    # Once destroyed, the task exits.
    await collect(watcher, lambda p: p["type"] == "exit" and task_id in p["items"])


async def test_across_pools_the_vm_stays_the_running_one_until_it_arrives(lab: Lab) -> None:
    """The target pool has the VM (same uuid, halted) from the metadata import on, while the
    source still runs it: clients keep seeing the source's running VM, with its migrate_send
    task, as long as the source has it; then the target's, running on the target host."""
    timing = lab.sim.timing
    timing.time_scale, timing.disk_rate = 0.02, 1e10  # disks fast, memory phase ~0.15 s
    watcher = await lab.connect()
    vm = await lab.id_of("VM", "web-01")
    pool_a = await lab.id_of("pool", "Pool A")
    b1 = await lab.id_of("host", "b1")
    source_db = lab.sim.pool("Pool A").db
    store = lab.server.state.store
    seen: list[tuple[str, bool]] = []  # (pool shown, source still had the VM at that time)

    async def watch_store() -> None:
        while True:
            shown = store.get(vm)
            still_at_source = any(r["uuid"] == vm for r in source_db.table("VM").values())
            if shown is not None:
                seen.append((shown["$pool"], still_at_source))
            await asyncio.sleep(0.005)

    watching = asyncio.create_task(watch_store())
    try:
        result = await lab.migrate("vm.migrate_pool", {"id": vm, "target_host_id": b1})
    finally:
        watching.cancel()
    assert result is True
    assert [pool for pool, at_source in seen if at_source] and all(
        pool == pool_a for pool, at_source in seen if at_source
    )
    arrived = await lab.get(vm)
    assert arrived["$container"] == b1 and arrived["power_state"] == "Running"

    def vm_arrived(params: dict[str, Any]) -> bool:
        obj = params["items"].get(vm)
        return params["type"] == "enter" and bool(obj) and obj["$container"] == b1

    messages = await collect(watcher, vm_arrived)
    pushed = [m["items"][vm] for m in messages if vm in m["items"]]
    assert all(m["type"] == "enter" for m in messages if vm in m["items"])  # never an exit
    send = [
        obj
        for m in messages
        if m["type"] == "enter"
        for obj in m["items"].values()
        if obj.get("name_label") == "Async.VM.migrate_send"
    ]
    assert send and any(
        send[0]["id"] in v["current_operations"] for v in pushed if v["$pool"] == pool_a
    )


async def test_task_cancel_on_the_xapi_task_stops_the_migration(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    watcher = await lab.connect()
    vm = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    call = asyncio.create_task(lab.migrate("vm.migrate", {"vm": vm, "targetHost": b1}))

    def send_task(params: dict[str, Any]) -> bool:
        return params["type"] == "enter" and any(
            o["type"] == "task" and o["name_label"] == "Async.VM.migrate_send" and o["progress"] > 0
            for o in params["items"].values()
        )

    last = (await collect(watcher, send_task))[-1]
    task_id = next(
        o["id"] for o in last["items"].values() if o.get("name_label") == "Async.VM.migrate_send"
    )
    assert await lab.client.call("task.cancel", {"id": task_id}) is True
    with pytest.raises(RpcError) as info:
        await call
    assert info.value.error["data"]["code"] == "TASK_CANCELLED"
    assert (await lab.get(vm))["$pool"] != (await lab.get(b1))["$pool"]
    error = await lab.error_of("task.cancel", {"id": "not-a-task"})
    assert error["code"] == 1 and error["message"] == "no such task not-a-task"
