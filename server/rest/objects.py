"""/rest/v0/{vms,hosts,pools}: the live collection, and the VM migrate action.

Listings are hrefs (`["/rest/v0/vms/<uuid>", ...]`) unless `?fields=a,b` (or `*`) asks for
objects, which then also carry their `href`; `?filter=` takes the same string filter as
`xo.getAllObjects`, `?limit=` bounds the result, `?ndjson=true` gives one item per line.

POST /rest/v0/vms/<id>/actions/migrate, body `{hostId, migrationNetworkId?, srId?,
srIdByVdiId?, networkIdByVifId?}` (extra keys are refused), runs through the migration service
exactly as `vm.migrate` (same plan, queue, cancel and history):
- default: 202, `Location: /rest/v0/tasks/<id>`, body `{"taskId": id}`;
- `?sync=true`: waits; 204 on success, else the error as JSON (the XO error JSON-RPC clients
  get, plus `taskId`) with its HTTP status. A client that leaves does not stop the migration.
Errors found before anything starts (unknown host or SR, VM already migrating) are answered
at once (404, 409) and create no task.

A non-admin lists and reads only the objects it may view (server/views.py); any other id is
403 (code 2), whether it exists or not. The migrate action needs what `vm.migrate` needs
(api/vm.py MIGRATE_RESOLVE, through server/access.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.registry import ResolveSpec
from api.vm import MIGRATE_RESOLVE
from server import errors
from server.access import resolve
from server.migrations.plan import MigrationRequest
from server.rest.context import RestContext
from server.rest.http import (
    BASE,
    ListQuery,
    RestError,
    endpoint,
    error_response,
    flag,
    json_response,
    read_json,
)
from server.rest.tasks import REST_MIGRATE_METHOD, task_href
from server.storage.records import User
from server.xapi_errors import to_wire_error

COLLECTIONS = {"vms": "VM", "hosts": "host", "pools": "pool"}


def _href(collection: str, obj_id: str) -> str:
    return f"{BASE}/{collection}/{obj_id}"


def _object(ctx: RestContext, user: User, collection: str, obj_id: str) -> dict[str, Any]:
    spec: ResolveSpec = {"obj": ("id", COLLECTIONS[collection], "view")}
    return resolve(spec, {"id": obj_id}, user, ctx.state.store, ctx.state.acl)["obj"]


@endpoint
async def root(_request: web.Request, _ctx: RestContext, _user: User) -> web.StreamResponse:
    return json_response([f"{BASE}/{name}" for name in [*COLLECTIONS, "tasks"]])


@endpoint
async def list_objects(request: web.Request, ctx: RestContext, user: User) -> web.StreamResponse:
    collection = request.match_info["collection"]
    query = ListQuery.parse(request)
    objects = query.select(ctx.state.views.visible_objects(user, COLLECTIONS[collection]))
    return query.respond([query.item(o, _href(collection, o["id"])) for o in objects])


@endpoint
async def get_object(request: web.Request, ctx: RestContext, user: User) -> web.StreamResponse:
    collection, obj_id = request.match_info["collection"], request.match_info["id"]
    return json_response(_object(ctx, user, collection, obj_id))


class MigrateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    hostId: str = Field(min_length=1)
    migrationNetworkId: str | None = Field(default=None, min_length=1)
    srId: str | None = Field(default=None, min_length=1)
    srIdByVdiId: dict[str, str] | None = None
    networkIdByVifId: dict[str, str] | None = None

    def rpc_params(self, vm_id: str) -> dict[str, Any]:
        """The same migration as `vm.migrate` params (for the same permission checks)."""
        return {
            "vm": vm_id,
            "targetHost": self.hostId,
            "sr": self.srId,
            "mapVdisSrs": self.srIdByVdiId,
            "mapVifsNetworks": self.networkIdByVifId,
            "migrationNetwork": self.migrationNetworkId,
        }

    def request(self, vm_id: str) -> MigrationRequest:
        return MigrationRequest(
            vm=vm_id,
            target_host=self.hostId,
            sr=self.srId,
            map_vdis_srs=dict(self.srIdByVdiId or {}),
            map_vifs_networks=dict(self.networkIdByVifId or {}),
            migration_network=self.migrationNetworkId,
        )


@endpoint
async def migrate_vm(request: web.Request, ctx: RestContext, user: User) -> web.StreamResponse:
    vm = _object(ctx, user, "vms", request.match_info["id"])
    body = MigrateBody.model_validate(await read_json(request, ctx))
    resolve(MIGRATE_RESOLVE, body.rpc_params(vm["id"]), user, ctx.state.store, ctx.state.acl)
    migrations = ctx.migrations()
    m = await migrations.start(
        body.request(vm["id"]), method=REST_MIGRATE_METHOD, user_id=user.id, user_email=user.email
    )
    location = {"Location": task_href(m.id)}
    if not flag(request, "sync"):
        return json_response({"taskId": m.id}, 202, location)
    if not await ctx.hold(request, m.done.wait):
        raise RestError(503, errors.service_unavailable("rest (stopping)"))
    if m.status == "success":
        return web.Response(status=204, headers=location)
    return error_response(_failure(ctx, user, m) | {"taskId": m.id})


def _failure(ctx: RestContext, user: User, m: Any) -> dict[str, Any]:
    if m.exception is not None:
        return to_wire_error(m.exception, is_admin=user.is_admin, store=ctx.state.store)
    error = m.error or {"code": "MIGRATION_FAILED", "params": [], "message": "migration failed"}
    return errors.server_error(
        error.get("message", "migration failed"),
        {"code": error.get("code"), "params": error.get("params", [])},
    ).to_wire()
