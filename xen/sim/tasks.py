"""Async calls as XAPI tasks (xapi.md 4.1, 3.7): records, the background runner, GC.

The pool owns one `TaskRunner`; every `Async.*` call becomes a task record plus an asyncio
task the runner cancels and awaits on shutdown. A synchronous call of an async-capable message
also runs under a task record (labelled with the message name, e.g. `VM.pool_migrate`), which
is destroyed when the call returns, as XAPI's `Context.of_http_req` does: event watchers see
it come and go, and `current_operations` keys point at a real task meanwhile.

`task.cancel` is advisory: it only records the request, which a handler honours at
`CallContext.check_cancelled` checkpoints while it declares itself cancellable.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xen.sim.codec import value_xml
from xen.sim.db import EPOCH, NULL_REF, Database, XapiFailure, new_ref, now
from xen.sim.registry import CallContext, message

if TYPE_CHECKING:
    from xen.sim.pool import SimPool

log = logging.getLogger(__name__)

MAX_TASKS = 200  # xapi_globs max_tasks
COMPLETED_TASK_TIMEOUT_S = 3900.0  # 65 min, simulated seconds
PENDING_TASK_TIMEOUT_S = 86400.0


async def invoke(handler: Callable[..., Any], ctx: CallContext, args: list[Any]) -> Any:
    result = handler(ctx, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


class TaskRunner:
    def __init__(self, pool: SimPool) -> None:
        self.pool = pool
        self._running: dict[str, asyncio.Task[None]] = {}
        self._sync: set[str] = set()  # task records of synchronous calls in progress
        self._finished_at: dict[str, float] = {}  # loop time of completion, for GC

    @property
    def db(self) -> Database:
        return self.pool.db

    def create_record(self, label: str, description: str = "", subtask_of: str = NULL_REF) -> str:
        self.gc()
        return self.db.create(
            "task",
            name_label=label,
            name_description=description,
            status="pending",
            progress=0.0,
            created=now(),
            finished=EPOCH,
            type="<none/>",
            result="",
            error_info=[],
            allowed_operations=[],
            resident_on=self.pool.master_ref,
            subtask_of=subtask_of if self.db.exists("task", subtask_of) else NULL_REF,
            backtrace="()",
        )

    def spawn(
        self, wire: str, method: str, session: str, handler: Callable[..., Any], args: list[Any]
    ) -> str:
        ref = self.create_record(wire)
        ctx = CallContext(self.pool, session, method, task=ref)
        task = asyncio.get_running_loop().create_task(
            self._run(ref, ctx, handler, args), name=f"xapi-task {wire}"
        )
        self._running[ref] = task
        task.add_done_callback(lambda _t: self._running.pop(ref, None))
        return ref

    async def run_sync(
        self, method: str, session: str, handler: Callable[..., Any], args: list[Any]
    ) -> Any:
        """A synchronous call under its own task record, gone once the call returns."""
        ref = self.create_record(method)
        self._sync.add(ref)
        try:
            return await invoke(handler, CallContext(self.pool, session, method, task=ref), args)
        finally:
            self._sync.discard(ref)
            self.destroy(ref)

    def is_running(self, ref: str) -> bool:
        return ref in self._running or ref in self._sync

    async def _run(
        self, ref: str, ctx: CallContext, handler: Callable[..., Any], args: list[Any]
    ) -> None:
        try:
            result = await invoke(handler, ctx, args)
        except XapiFailure as exc:
            self.fail(ref, [exc.code, *exc.params])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler bug must still end the task, visibly
            log.exception("event=task_crashed task=%s method=%s", ref, ctx.method)
            self.fail(ref, ["INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"])
        else:
            self.complete(ref, result)

    def complete(self, ref: str, value: Any) -> None:
        if not self.db.exists("task", ref):
            return
        self.db.update(
            "task",
            ref,
            status="success",
            progress=1.0,
            finished=now(),
            result=value_xml(value),
            allowed_operations=[],
        )
        self._finished(ref)

    def fail(self, ref: str, description: list[str]) -> None:
        if not self.db.exists("task", ref):
            return
        cancelled = description[0] == "TASK_CANCELLED"
        self.db.update(
            "task",
            ref,
            status="cancelled" if cancelled else "failure",
            progress=1.0,
            finished=now(),
            # A cancelled task's error_info stays empty, as XAPI's TaskHelper.cancel leaves it.
            error_info=[] if cancelled else description,
            allowed_operations=[],
        )
        self._finished(ref)

    def _finished(self, ref: str) -> None:
        self._finished_at[ref] = asyncio.get_running_loop().time()
        if "destroy" in self.db.get("task", ref)["current_operations"].values():
            self.destroy(ref)
        self.gc()

    def destroy(self, ref: str) -> None:
        self._finished_at.pop(ref, None)
        if self.db.exists("task", ref):
            for sub in list(self.db.get("task", ref)["subtasks"]):
                if self.db.exists("task", sub):
                    self.db.update("task", sub, subtask_of=NULL_REF)
            self.db.delete("task", ref)

    def gc(self) -> None:
        """At most MAX_TASKS tasks; completed ones expire after 65 min (scaled)."""
        table = self.db.table("task")
        scale = self.pool.timing.time_scale
        loop_now = asyncio.get_running_loop().time()
        expired = [
            ref
            for ref, at in self._finished_at.items()
            if loop_now - at > COMPLETED_TASK_TIMEOUT_S * scale
        ]
        for ref in expired:
            self.destroy(ref)
        excess = len(table) - MAX_TASKS
        if excess > 0:
            oldest = sorted(
                (ref for ref in table if table[ref]["status"] != "pending"),
                key=lambda r: table[r]["finished"],
            )
            for ref in oldest[:excess]:
                self.destroy(ref)

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()


def _runner(ctx: CallContext) -> TaskRunner:
    return ctx.pool.tasks  # type: ignore[attr-defined]


@message("task.cancel", asynchronous=False)
def task_cancel(ctx: CallContext, task: str) -> None:
    rec = ctx.db.get("task", task)  # HANDLE_INVALID for unknown refs
    # Advisory: recorded, never an error, whatever the task's state.
    if rec["status"] == "pending" and "cancel" not in rec["current_operations"].values():
        ctx.db.map_set("task", task, "current_operations", new_ref(), "cancel")


@message("task.destroy", asynchronous=False)
def task_destroy(ctx: CallContext, task: str) -> None:
    rec = ctx.db.get("task", task)
    runner = _runner(ctx)
    if rec["status"] == "pending" and runner.is_running(task):
        # Deferred: the task disappears once its operation ends.
        ctx.db.map_set("task", task, "current_operations", new_ref(), "destroy")
        return
    runner.destroy(task)


@message("task.create", asynchronous=False)
def task_create(ctx: CallContext, label: str, description: str) -> str:
    return _runner(ctx).create_record(label, description)
