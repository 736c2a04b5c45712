"""task.*: XAPI tasks as xo-server exposes them (api/task.mjs): cancel and destroy."""

from __future__ import annotations

from api.registry import Call, Method, XoParams
from api.xapi_call import connection_of


class TaskParams(XoParams):
    id: str


async def cancel(call: Call, params: TaskParams) -> None:
    task = call.objects["task"]
    await connection_of(call, task).call("task.cancel", task["_xapiRef"])


async def destroy(call: Call, params: TaskParams) -> None:
    task = call.objects["task"]
    await connection_of(call, task).call("task.destroy", task["_xapiRef"])


METHODS = [
    Method("task.cancel", cancel, TaskParams, resolve={"task": ("id", "task")}),
    Method("task.destroy", destroy, TaskParams, resolve={"task": ("id", "task")}),
]
