"""Async calls and the task lifecycle (xapi.md 4.1, 3.7), with test-only messages."""

from __future__ import annotations

import asyncio
import xmlrpc.client
from typing import Any

from tests.sim.helpers import failure, master_url, raw_call, raw_login, xenapi
from xen.sim import Simulator
from xen.sim.registry import CallContext, XapiFailure, message


@message("simtest.work", min_args=2, max_args=2)
async def _work(ctx: CallContext, window_s: str, tail_s: str) -> str:
    """Cancellable for `window_s` real seconds, then not for `tail_s`; returns the master ref."""
    ctx.set_cancellable(True)
    ctx.set_progress(0.25)
    await ctx.sleep(float(window_s) / ctx.pool.timing.time_scale)
    ctx.set_cancellable(False)
    ctx.set_progress(0.75)
    await asyncio.sleep(float(tail_s))
    ctx.check_cancelled()  # ignored: not cancellable any more
    return ctx.pool.master_ref


@message("simtest.fail", min_args=0, max_args=0)
def _fail(ctx: CallContext) -> None:
    raise XapiFailure("VM_BAD_POWER_STATE", "OpaqueRef:x", "running", "halted")


def decode_result(result: str) -> Any:
    doc = f"<methodResponse><params><param>{result}</param></params></methodResponse>"
    return xmlrpc.client.loads(doc)[0][0]


def wait_task(x: Any, task: str, timeout: float = 5.0) -> dict[str, Any]:
    """The canonical pattern: event.from on task/<ref> until not pending."""
    token = ""
    while True:
        batch = x.event_from([f"task/{task}"], token, timeout)
        token = batch["token"]
        for ev in batch["events"]:
            if ev["operation"] != "del" and ev["snapshot"]["status"] != "pending":
                return ev["snapshot"]
        assert batch["events"], "task did not finish in time"


async def test_async_success_record(sim: Simulator, manifest: dict[str, Any]) -> None:
    def work(x: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
        task = x.Async.simtest.work("0.05", "0")
        first = x.task.get_record(task)
        return task, first, wait_task(x, task)

    task, first, final = await xenapi(master_url(manifest), work)
    assert task.startswith("OpaqueRef:")
    assert first["status"] == "pending" and first["name_label"] == "Async.simtest.work"
    assert first["type"] == "<none/>" and first["finished"].value == "19700101T00:00:00Z"
    assert first["subtask_of"] == "OpaqueRef:NULL" and first["error_info"] == []
    assert first["resident_on"] == sim.pool("Pool A").master_ref
    assert final["status"] == "success" and final["progress"] == 1.0
    assert final["allowed_operations"] == [] and final["error_info"] == []
    assert final["result"] == f"<value>{sim.pool('Pool A').master_ref}</value>"
    assert decode_result(final["result"]) == sim.pool("Pool A").master_ref
    assert final["finished"].value >= final["created"].value != "19700101T00:00:00Z"


async def test_async_failure(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> dict[str, Any]:
        return wait_task(x, x.Async.simtest.fail())

    final = await xenapi(master_url(manifest), work)
    assert final["status"] == "failure" and final["progress"] == 1.0
    assert final["error_info"] == ["VM_BAD_POWER_STATE", "OpaqueRef:x", "running", "halted"]
    assert final["result"] == ""


async def test_sync_call_of_the_same_message(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    assert await failure(url, lambda x: x.simtest.fail()) == [
        "VM_BAD_POWER_STATE", "OpaqueRef:x", "running", "halted"]  # fmt: skip


async def test_cancel_inside_the_window(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> dict[str, Any]:
        task = x.Async.simtest.work("5", "0")
        while "cancel" not in x.task.get_allowed_operations(task):
            pass
        x.task.cancel(task)
        return wait_task(x, task)

    final = await xenapi(master_url(manifest), work)
    assert final["status"] == "cancelled" and final["progress"] == 1.0
    assert final["error_info"] == []


async def test_cancel_outside_the_window_is_ignored(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        task = x.Async.simtest.work("0", "0.3")
        while x.task.get_progress(task) < 0.75:
            pass
        assert x.task.get_allowed_operations(task) == []
        x.task.cancel(task)  # accepted, never an error
        pending = x.task.get_record(task)
        final = wait_task(x, task)
        x.task.cancel(task)  # on a finished task: still no error
        return pending, final

    pending, final = await xenapi(master_url(manifest), work)
    assert list(pending["current_operations"].values()) == ["cancel"]
    assert final["status"] == "success"


async def test_destroy_pending_is_deferred(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    task = (await raw_call(url, "Async.simtest.work", session, "0", "0.2"))["Value"]
    assert (await raw_call(url, "task.destroy", session, task))["Status"] == "Success"
    assert (await raw_call(url, "task.get_status", session, task))["Value"] == "pending"
    await asyncio.sleep(0.4)
    reply = await raw_call(url, "task.get_status", session, task)
    assert reply["ErrorDescription"] == ["HANDLE_INVALID", "task", task]


async def test_destroy_completed_and_create(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> None:
        task = x.Async.simtest.work("0", "0")
        wait_task(x, task)
        x.task.destroy(task)
        assert task not in x.task.get_all()
        manual = x.task.create("xo task", "wrapping several calls")
        rec = x.task.get_record(manual)
        assert rec["name_label"] == "xo task" and rec["status"] == "pending"
        x.task.set_progress(manual, 0.5)
        x.task.set_status(manual, "success")
        assert x.task.get_record(manual)["status"] == "success"

    await xenapi(master_url(manifest), work)


async def test_task_gc_keeps_at_most_200(sim: Simulator, manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    replies = await asyncio.gather(
        *(raw_call(url, "Async.simtest.work", session, "0", "0") for _ in range(230))
    )
    assert all(r["Status"] == "Success" for r in replies)
    await asyncio.sleep(0.3)
    tasks = (await raw_call(url, "task.get_all", session))["Value"]
    assert len(tasks) <= 200
    newest = replies[-1]["Value"]
    assert newest in tasks


async def test_completed_tasks_expire(sim: Simulator, manifest: dict[str, Any]) -> None:
    sim.timing.time_scale = 0.0001  # 65 simulated minutes = 0.39 s
    url = master_url(manifest)
    session = await raw_login(url)
    task = (await raw_call(url, "Async.simtest.work", session, "0", "0"))["Value"]
    await asyncio.sleep(0.1)
    assert task in (await raw_call(url, "task.get_all", session))["Value"]
    await asyncio.sleep(0.7)
    assert task not in (await raw_call(url, "task.get_all", session))["Value"]
