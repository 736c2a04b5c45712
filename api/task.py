"""task.*: XAPI tasks as xo-server exposes them (api/task.mjs): cancel and destroy."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams
from xen.errors import PoolUnavailable


class TaskParams(XoParams):
    id: str


def _connection(call: Call, task: dict[str, Any]) -> Any:
    pools = call.state.pools
    conn = pools.connection_for_pool(task["$pool"]) if pools is not None else None
    if conn is None:
        raise PoolUnavailable(task["$pool"], "not connected")
    return conn


async def cancel(call: Call, params: TaskParams) -> None:
    task = call.objects["task"]
    await _connection(call, task).call("task.cancel", task["_xapiRef"])


async def destroy(call: Call, params: TaskParams) -> None:
    task = call.objects["task"]
    await _connection(call, task).call("task.destroy", task["_xapiRef"])


METHODS = [
    Method("task.cancel", cancel, TaskParams, resolve={"task": ("id", "task")}),
    Method("task.destroy", destroy, TaskParams, resolve={"task": ("id", "task")}),
]
