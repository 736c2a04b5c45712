"""xo.*: the object collection snapshot (xo-server api/xo.mjs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

from api.registry import OPTIONAL, Call, Method, XoParams
from server.limits import InputLimits, invalid_value
from server.matching import FilterError, compile_string_filter, matches


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
    store = call.state.store
    limits = call.state.config.limits
    if params.ndjson:
        _predicate(params.filter, limits)  # a bad filter is refused now, not at fetch time
        assert call.user is not None  # signed in
        url = call.state.oneshot.register(
            _ndjson_producer(call, params),
            ".ndjson",
            owner=call.user.id,
            quota=limits.max_downloads_per_user,
        )
        return {"$getFrom": url}
    if params.filter is None and params.limit is None:
        return store.all()  # serialized as is: no copy
    if isinstance(params.filter, dict) and isinstance(params.filter.get("type"), str):
        return _select(store.by_type(params.filter["type"]), params, limits)
    return _select(store.all().values(), params, limits)


def _ndjson_producer(call: Call, params: GetAllObjectsParams) -> Any:
    async def produce(request: web.Request) -> web.StreamResponse:
        # Taken at fetch time, as xo-server streams the collection when the URL is read.
        objects = get_all_objects(call, params.model_copy(update={"ndjson": False}))
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
