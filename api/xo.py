"""xo.*: the object collection snapshot (xo-server api/xo.mjs).

xo-server returns every object to every signed-in user; xo-migrate returns a non-admin only the
objects it may view (its ACLs, through containers: server/views.py), as it pushes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from api.registry import OPTIONAL, Call, Method, XoParams
from server.limits import InputLimits, invalid_value
from server.matching import FilterError, compile_string_filter, matches
from server.storage.records import User

if TYPE_CHECKING:
    from server.state import ServerState


class GetAllObjectsParams(XoParams):
    filter: dict[str, Any] | str = OPTIONAL
    limit: float = OPTIONAL
    ndjson: bool = OPTIONAL


def _predicate(
    flt: dict[str, Any] | str | None, limits: InputLimits
) -> Callable[[dict[str, Any]], bool] | None:
    if flt is None or flt == {}:
        return None
    if isinstance(flt, str):
        try:
            return compile_string_filter(
                flt, max_length=limits.max_filter_length, max_terms=limits.max_filter_terms
            )
        except FilterError as exc:
            raise invalid_value("/filter", exc.keyword, exc.limit, str(exc)) from None
    return lambda obj: matches(obj, flt)


def _select(
    objects: Iterable[dict[str, Any]], params: GetAllObjectsParams, limits: InputLimits
) -> dict[str, Any]:
    predicate = _predicate(params.filter, limits)
    limit = None if params.limit is None else max(int(params.limit), 0)
    out: dict[str, Any] = {}
    for obj in objects:
        if limit is not None and len(out) >= limit:
            break
        if predicate is None or predicate(obj):
            out[obj["id"]] = obj
    return out


def get_all_objects(call: Call, params: GetAllObjectsParams) -> Any:
    user = call.user
    assert user is not None  # signed in
    if params.ndjson:
        _predicate(params.filter, call.state.config.limits)  # refused now, not at fetch time
        url = call.state.oneshot.register(
            _ndjson_producer(call.state, user, params),
            ".ndjson",
            owner=user.id,
            quota=call.state.config.limits.max_downloads_per_user,
        )
        return {"$getFrom": url}
    return _objects(call.state, user, params)


def _objects(state: ServerState, user: User, params: GetAllObjectsParams) -> dict[str, Any]:
    """What `user` may view (everything for an admin, server/views.py), filtered."""
    store, limits = state.store, state.config.limits
    obj_type = None
    if isinstance(params.filter, dict) and isinstance(params.filter.get("type"), str):
        obj_type = params.filter["type"]
    if user.is_admin:
        if params.filter is None and params.limit is None:
            return store.all()  # serialized as is: no copy
        if obj_type is not None:
            return _select(store.by_type(obj_type), params, limits)
        return _select(store.all().values(), params, limits)
    return _select(state.views.visible_objects(user, obj_type), params, limits)


def _ndjson_producer(state: ServerState, user: User, params: GetAllObjectsParams) -> Any:
    async def produce(request: web.Request) -> web.StreamResponse:
        # Taken at fetch time, as xo-server streams the collection when the URL is read; with
        # the rights of the user who asked for it, as they are then.
        current = await state.storage.user_by_id(user.id)
        if current is None:
            raise web.HTTPNotFound()
        objects = _objects(state, current, params)
        body = b"".join(orjson.dumps(obj) + b"\n" for obj in objects.values())
        return web.Response(body=body, content_type="application/json")

    return produce


METHODS = [
    Method(
        "xo.getAllObjects",
        get_all_objects,
        GetAllObjectsParams,
        description="Returns all XO objects",
    ),
]
