"""The hosts' stats over HTTP: GET `/rrd_updates`, `/host_rrd` and `/vm_rrd`, with the query
parameters xcp-rrdd reads (`rrdd_http_handler.ml`) behind XAPI's session check.

`/rrd_updates?session_id=&start=&interval=&cf=&host=true&vm_uuid=&json=`: the host's own RRD
when `host=true`, and those of the VMs running on it (all, `vm_uuid=<uuid>` for one, or
`vm_uuid=none`). This is what xo-server's xapi-stats asks every host for (with `json=true`).
`/host_rrd?session_id=[&json=]` and `/vm_rrd?session_id=&uuid=` give a whole RRD.

Without a valid `session_id` the answer is 401, as XAPI's HTTP handlers give.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from xen.sim.rrd import export, model

if TYPE_CHECKING:
    from xen.sim.pool import SimPool

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "X-Requested-With"}
PATHS = ("/rrd_updates", "/host_rrd", "/vm_rrd")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=CORS)


def _body(body: str, as_json: bool) -> web.Response:
    content_type = "application/json" if as_json else "text/xml"
    return web.Response(text=body, content_type=content_type, headers=CORS)


def _int(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"missing query parameter {name!r}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"query parameter {name!r} must be an integer, not {raw!r}") from None


async def handle(request: web.Request, pool: SimPool, host: str) -> web.Response:
    """Answer one stats request to `host` (any host of the pool serves its own stats)."""
    session = request.query.get("session_id", "")
    if not pool.sessions.valid(session):
        return _text(401, "Unauthorized: a valid session_id is needed")
    pool.count(f"GET {request.path}")
    db = pool.db
    as_json = "json" in request.query
    try:
        if request.path == "/host_rrd":
            owner = model.host_rrd(db, pool.activity, host)
            return _body(export.dump(owner, time.time(), as_json=as_json), as_json)
        if request.path == "/vm_rrd":
            uuid = request.query.get("uuid", "")
            refs = [r for r, rec in db.table("VM").items() if rec["uuid"] == uuid]
            if not refs:
                return _text(404, f"no VM with uuid {uuid!r}")
            return _body(export.dump(model.vm_rrd(db, refs[0]), time.time(), as_json=as_json),
                         as_json)  # fmt: skip
        selection = export.select(time.time(), _int(request, "start"), _int(request, "interval", 0))
    except (ValueError, export.NoArchive) as exc:
        return _text(400, f"Bad request: {exc}")
    cf = request.query.get("cf", "").upper()
    cfs = (cf,) if cf in export.CFS else export.CFS
    owners = []
    if request.query.get("host") == "true":
        owners.append(model.host_rrd(db, pool.activity, host))
    vm_uuid = request.query.get("vm_uuid", "all")
    for vm in model.resident_vms(db, host):
        if vm_uuid == "all" or db.get("VM", vm)["uuid"] == vm_uuid:
            owners.append(model.vm_rrd(db, vm))
    body = await asyncio.to_thread(export.xport, owners, selection, cfs, as_json=as_json)
    return _body(body, as_json)
