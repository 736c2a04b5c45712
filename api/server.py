"""server.*: the XAPI pools xo-migrate stays connected to (xo-server api/server.mjs).

xo-server calls a pool connection a "server". Records are persisted in SQLite; connecting is
the pool manager's job (xen/pools.py): `server.add` returns at once, the connection comes up in
the background and `server.getAll` shows its status.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from api.registry import OPTIONAL, Call, Method, XoParams
from server import errors
from server.config import normalize_pool_url
from server.storage.records import ServerRecord


async def _record(call: Call, server_id: str) -> ServerRecord:
    rec = await call.state.storage.server(server_id)
    if rec is None:
        raise errors.no_such_object(server_id, "xenServer")
    return rec


async def _tell_the_others(call: Call) -> None:
    """In a cluster, every instance connects to the pools as stored."""
    if call.state.cluster is not None:
        await call.state.cluster.servers_changed()


class AddParams(XoParams):
    label: str = OPTIONAL
    host: str
    username: str
    password: str
    autoConnect: bool = True
    allowUnauthorized: bool = OPTIONAL
    readOnly: bool = OPTIONAL


async def add(call: Call, params: AddParams) -> str:
    rec = ServerRecord(
        id=str(uuid.uuid4()),
        url=normalize_pool_url(params.host),
        username=params.username,
        password=params.password,
        label=params.label or "",
        allow_unauthorized=bool(params.allowUnauthorized),
        enabled=params.autoConnect,
        created_at=time.time(),
    )
    await call.state.storage.add_server(rec)
    if call.state.pools is not None:
        await call.state.pools.add(rec.to_pool_config())
    await _tell_the_others(call)
    return rec.id


class IdParams(XoParams):
    id: str


async def remove(call: Call, params: IdParams) -> None:
    await _record(call, params.id)
    await call.state.storage.remove_server(params.id)
    if call.state.pools is not None:
        await call.state.pools.remove(params.id)
    await _tell_the_others(call)


class SetParams(XoParams):
    id: str
    label: str = OPTIONAL
    host: str = OPTIONAL
    username: str = OPTIONAL
    password: str = OPTIONAL
    allowUnauthorized: bool = OPTIONAL


async def set_(call: Call, params: SetParams) -> None:
    rec = await _record(call, params.id)
    if params.label is not None:
        rec.label = params.label
    if params.host is not None:
        rec.url = normalize_pool_url(params.host)
    if params.username is not None:
        rec.username = params.username
    if params.password is not None:
        rec.password, rec.password_env = params.password, ""
        rec.credentials_error = ""  # a new password ends the degraded state
    if params.allowUnauthorized is not None:
        rec.allow_unauthorized = params.allowUnauthorized
    await call.state.storage.update_server(rec)
    pools = call.state.pools
    if pools is not None:  # reconnect with the new settings
        await pools.remove(rec.id)
        await pools.add(rec.to_pool_config())
    await _tell_the_others(call)


async def _set_enabled(call: Call, server_id: str, enabled: bool) -> None:
    rec = await _record(call, server_id)
    rec.enabled = enabled
    await call.state.storage.update_server(rec)
    pools = call.state.pools
    if pools is not None:
        await (pools.enable(server_id) if enabled else pools.disable(server_id))
    await _tell_the_others(call)


async def enable(call: Call, params: IdParams) -> None:
    await _set_enabled(call, params.id, True)


async def disable(call: Call, params: IdParams) -> None:
    await _set_enabled(call, params.id, False)


async def get_all(call: Call, params: XoParams) -> list[dict[str, Any]]:
    pools = call.state.pools
    statuses = {s["id"]: s for s in pools.statuses()} if pools is not None else {}
    out = []
    for rec in await call.state.storage.servers():
        entry: dict[str, Any] = {
            "id": rec.id,
            "host": rec.url,
            "label": rec.label,
            "username": rec.username,
            "enabled": rec.enabled,
            "allowUnauthorized": rec.allow_unauthorized,
            "readOnly": False,
            "status": "disconnected",
        }
        status = statuses.get(rec.id)
        if status is not None:
            entry["status"] = status.get("status", "disconnected")
            for key in ("error", "poolId"):
                if status.get(key) is not None:
                    entry[key] = status[key]
            if status.get("poolId"):
                entry.update(_pool_fields(call, status["poolId"], entry["status"] == "connected"))
                entry["label"] = entry["label"] or entry.get("poolNameLabel", "")
        elif pools is None:
            entry["error"] = "pool connections are not available in this build"
        out.append(entry)
    return out


def _pool_fields(call: Call, pool_id: str, connected: bool) -> dict[str, Any]:
    """What xo-server adds from the pool's objects: `master` (the master host's id, while
    connected), `poolNameLabel` / `poolNameDescription` (absent when empty, as xo-server drops
    empty values) and `poolMembersAddresses` (the hosts' addresses, master first)."""
    store = call.state.store
    pool = store.get(pool_id)
    if pool is None or pool.get("type") != "pool":
        return {}
    fields: dict[str, Any] = {}
    master = pool.get("master")
    if connected and isinstance(master, str):
        fields["master"] = master
    hosts = [h for h in store.by_type("host") if h.get("$pool") == pool_id and h.get("address")]
    hosts.sort(key=lambda h: (h["id"] != master, h["address"]))
    if hosts:
        fields["poolMembersAddresses"] = [h["address"] for h in hosts]
    for key, field in (
        ("poolNameLabel", "name_label"),
        ("poolNameDescription", "name_description"),
    ):
        if pool.get(field):
            fields[key] = pool[field]
    return fields


METHODS = [
    Method("server.add", add, AddParams, "admin", description="register a new Xen server"),
    Method("server.remove", remove, IdParams, "admin", description="unregister a Xen server"),
    Method(
        "server.set", set_, SetParams, "admin", description="changes the properties of a Xen server"
    ),
    Method("server.enable", enable, IdParams, "admin", description="enable a Xen server"),
    Method("server.disable", disable, IdParams, "admin", description="disable a Xen server"),
    Method(
        "server.getAll",
        get_all,
        permission="admin",
        description="returns all the registered Xen server",
    ),
]
