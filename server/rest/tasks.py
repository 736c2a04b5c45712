"""/rest/v0/tasks: migrations shown as XO tasks (xo-server's task log shape, section 4.5).

A migration record becomes `{id, properties, start, status, end?, result?,
abortionRequestedAt?}`:
- `properties`: `name` `REST API: Migrate VM` and `type` `xo:rest-api:action` for migrations
  started here (`API call: <method>` / `api.call` for those started over JSON-RPC),
  `objectId` (the VM), `userId`, `progress` in percent; plus ours: `migrationStatus`, `phase`,
  `eta` (seconds), `queuePosition`.
- status mapping: queued, running -> `pending`; success -> `success`; failure -> `failure`;
  cancelled -> `failure` (result code `TASK_CANCELLED`); interrupted -> `interrupted`, the
  status xo-server gives the tasks that were pending when it stopped.
- `start` / `end`: milliseconds since the epoch, as xo-server; `end` only once finished.
- `result` on failure: the error `{code, params, message, hint}` with XAPI's code; absent on
  success (a migration returns nothing).

`?watch=true&ndjson=true` streams `["update", task]` for the current tasks then for each
change, and `["remove", {id}]` when a task leaves the live collection (an hour after its end by
default; it stays readable by id) or stops matching `filter`. Changes are coalesced per task,
so a slow reader gets the latest state of each task, never an unbounded backlog.

A non-admin sees the migrations it started and those of VMs it may view (as
`migration.getAll`), and aborts those it started or whose VM it may administrate; any other
task id is 403 (code 2), whether it exists or not. A watch stream decides at each change of a
task whether its user sees it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from server import errors
from server.rest.context import RestContext
from server.rest.http import BASE, NDJSON, ListQuery, RestError, endpoint, flag, json_response
from server.storage.records import User
from xen.store import ChangeSet

log = logging.getLogger("xo_migrate.rest")

REST_MIGRATE_METHOD = "rest.vm.migrate"  # the `method` of migrations started by this API
TASK_NAME = "REST API: Migrate VM"
TASK_TYPE = "xo:rest-api:action"
PENDING = frozenset({"queued", "running"})
TASK_STATUS = {
    "queued": "pending",
    "running": "pending",
    "success": "success",
    "failure": "failure",
    "cancelled": "failure",
    "interrupted": "interrupted",
}
HISTORY_SCAN = 1000  # records read for a listing (xo-server keeps 1000 task logs)


def task_href(task_id: str) -> str:
    return f"{BASE}/tasks/{task_id}"


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def task_of(record: dict[str, Any], aborted_at: int | None = None) -> dict[str, Any]:
    """A migration record (live or from history) as an XO task log."""
    status = record.get("status", "failure")
    method = record.get("method") or "vm.migrate"
    from_rest = method == REST_MIGRATE_METHOD
    properties = {
        "name": TASK_NAME if from_rest else f"API call: {method}",
        "type": TASK_TYPE if from_rest else "api.call",
        "objectId": record.get("vm"),
        "userId": record.get("user"),
        "progress": round(float(record.get("progress") or 0.0) * 100, 1),
        "migrationStatus": status,
        "phase": record.get("phase"),
        "eta": record.get("eta"),
        "queuePosition": record.get("queuePosition"),
    }
    task: dict[str, Any] = {
        "id": record["id"],
        "properties": properties,
        "start": _ms(record.get("created")),
        "status": TASK_STATUS.get(status, "failure"),
    }
    if status not in PENDING:
        task["end"] = _ms(record.get("finished") or record.get("created"))
    if status not in PENDING and status != "success":
        task["result"] = record.get("error") or {
            "code": "UNKNOWN",
            "params": [],
            "message": f"migration {status}",
        }
    if aborted_at is not None:
        task["abortionRequestedAt"] = aborted_at
    return task


def _task(ctx: RestContext, record: dict[str, Any]) -> dict[str, Any]:
    return task_of(record, ctx.aborts.get(record["id"]))


# -- endpoints -------------------------------------------------------------------------------


def _sees(ctx: RestContext, user: User, record: dict[str, Any]) -> bool:
    return ctx.state.views.can_see_record(user, record, "migration")


async def _record(ctx: RestContext, user: User, task_id: str, permission: str) -> dict[str, Any]:
    """The migration behind a task the user may see: 404 for an admin when unknown, 403 for
    anyone else who may not see it, whether it exists or not."""
    record = await ctx.state.views.record_for(user, ctx.migrations().get, task_id, "migration")
    if record is None:
        raise RestError(403, errors.unauthorized(permission, task_id, "task"))
    return record


@endpoint
async def list_tasks(request: web.Request, ctx: RestContext, user: User) -> web.StreamResponse:
    query = ListQuery.parse(request)
    if flag(request, "watch"):
        if not query.ndjson:
            raise RestError(400, errors.invalid_parameters([], "watch=true requires ndjson=true"))
        return await _watch(request, ctx, query, user)
    scan = HISTORY_SCAN if query.predicate is not None or query.limit is None else query.limit
    if not user.is_admin:
        scan = HISTORY_SCAN
    records = await ctx.migrations().all(max(scan, 1))
    tasks = [_task(ctx, r) for r in records if user.is_admin or _sees(ctx, user, r)]
    return query.respond([query.item(t, task_href(t["id"])) for t in query.select(tasks)])


@endpoint
async def get_task(request: web.Request, ctx: RestContext, user: User) -> web.StreamResponse:
    task_id = request.match_info["id"]
    migrations = ctx.migrations()
    record = await _record(ctx, user, task_id, "view")
    if flag(request, "wait") and record["status"] in PENDING:

        async def until_finished() -> None:
            try:
                await migrations.wait(task_id)
            except errors.XoError:
                # Known but not tracked live (being recovered after a restart): its record
                # is published in the collection once settled.
                await _settled(ctx, task_id)

        if not await ctx.hold(request, until_finished):
            raise RestError(503, errors.service_unavailable("rest (stopping)"))
        record = await migrations.get(task_id)
    return json_response(_task(ctx, record))


async def _settled(ctx: RestContext, task_id: str) -> None:
    settled = asyncio.Event()

    def on_changes(changes: ChangeSet) -> None:
        obj = changes.enter.get(task_id)
        if obj is not None and obj.get("status") not in PENDING:
            settled.set()

    unsubscribe = ctx.state.store.subscribe(on_changes)
    try:
        if (await ctx.migrations().get(task_id))["status"] not in PENDING:
            return
        await settled.wait()
    finally:
        unsubscribe()


@endpoint
async def abort_task(request: web.Request, ctx: RestContext, user: User) -> web.StreamResponse:
    """migration.cancel: 204 once cancelled; 202 if XAPI has not answered within the cancel
    wait; 409 with the reason when there is nothing left to abort or it is too late."""
    task_id = request.match_info["id"]
    migrations = ctx.migrations()
    if not ctx.state.views.can_cancel(user, await _record(ctx, user, task_id, "administrate")):
        raise RestError(403, errors.unauthorized("administrate", task_id, "task"))
    ctx.note_abort(task_id)
    outcome = await migrations.cancel(task_id)
    if outcome.get("cancelled"):
        return web.Response(status=204)
    if outcome.get("status") in PENDING:
        if outcome.get("outcome") == "pending":
            return web.Response(status=202, headers={"Location": task_href(task_id)})
    ctx.aborts.pop(task_id, None)  # nothing was aborted: do not show an abortion request
    raise RestError(
        409,
        errors.XoError(
            5,
            "forbidden operation: abort",
            {
                "operation": "abort",
                "reason": outcome.get("reason", ""),
                "status": outcome.get("status"),
            },
        ),
    )


# -- watch -----------------------------------------------------------------------------------


async def _watch(
    request: web.Request, ctx: RestContext, query: ListQuery, user: User
) -> web.StreamResponse:
    shown: set[str] = set()  # ids announced to this client (and not removed since)
    pending: dict[str, bytes] = {}  # id -> latest line not yet written: bounded by task count
    wake = asyncio.Event()

    def line(kind: str, payload: Any) -> bytes:
        return orjson.dumps([kind, payload]) + b"\n"

    def stage(record: dict[str, Any]) -> None:
        task = _task(ctx, record)
        if (user.is_admin or _sees(ctx, user, record)) and (
            query.predicate is None or query.predicate(task)
        ):
            shown.add(task["id"])
            pending[task["id"]] = line("update", query.item(task, task_href(task["id"])))
        elif task["id"] in shown:
            shown.discard(task["id"])
            pending[task["id"]] = line("remove", {"id": task["id"]})

    def on_changes(changes: ChangeSet) -> None:
        for obj in changes.enter.values():
            if obj.get("type") == "migration":
                stage(obj)
        for obj_id in changes.exit:
            if obj_id in shown:
                shown.discard(obj_id)
                pending[obj_id] = line("remove", {"id": obj_id})
        if pending:
            wake.set()

    # Snapshot and subscription in the same tick (the history is read before): no change
    # falls between them. Errors (service unavailable) are raised before the response
    # starts, so they stay JSON.
    migrations = ctx.migrations()
    history = await migrations.storage.recent_migrations(HISTORY_SCAN)
    for record in reversed(migrations.merge(history, HISTORY_SCAN)):  # oldest first
        stage(record)
    if query.limit is not None:  # `limit` bounds the initial snapshot only
        for extra in list(pending)[query.limit :]:
            del pending[extra]
            shown.discard(extra)
    unsubscribe = ctx.state.store.subscribe(on_changes)
    ctx.open_streams += 1
    log.info("event=rest_watch_start remote=%s", request.remote)
    try:
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
        await response.prepare(request)
        while not ctx.gone(request):
            if pending:
                batch = b"".join(pending.values())
                pending.clear()
                await response.write(batch)
            wake.clear()
            if not pending:
                await ctx.hold(request, wake.wait)
    except ConnectionError:
        pass  # the client went away mid-write
    finally:
        unsubscribe()
        ctx.open_streams -= 1
        log.info("event=rest_watch_end remote=%s", request.remote)
    return response
