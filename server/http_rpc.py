"""POST /api/: the same JSON-RPC methods over plain HTTP, for services.

Authentication: `Authorization: Bearer <token>`, the `authenticationToken` cookie (the REST
cookie xo-cli sends) or the `token` cookie (the web UI's); without any, the caller is anonymous
(public methods only). A bad or expired token is 401 with a code 3 error. A cookie-authenticated
request must pass the cross-site check (server/crosssite.py: same origin, `application/json`),
else 403. A body over `max_message_size` is 413, one not received within `body_timeout` 408.
Unlike the WebSocket (which mirrors xo-server's silence), HTTP follows JSON-RPC 2.0 to the
letter: batches are allowed (up to `max_items` requests), invalid JSON gets -32700 and invalid
requests -32600 (id null), and a body of notifications only gets 204.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from server import errors
from server.connection import Connection
from server.crosssite import cross_site_refusal
from server.dispatch import Dispatcher, error_frame
from server.errors import XoError
from server.framing import NOTIFICATION, Request, classify
from server.http_body import BodyError, read_body
from server.state import ServerState

_JSON = "application/json"


def _token(request: web.Request) -> tuple[str | None, bool]:
    """(the token, whether it came from a cookie)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    # `token` is the web UI's cookie (server/signin.py); xo-server's REST API reads it too.
    cookie = request.cookies.get("authenticationToken") or request.cookies.get("token") or None
    return cookie, cookie is not None


async def handle_api_post(request: web.Request) -> web.StreamResponse:
    from server.app import DISPATCHER, STATE

    state: ServerState = request.app[STATE]
    dispatcher: Dispatcher = request.app[DISPATCHER]
    conn = Connection(request.remote or "?")
    token, from_cookie = _token(request)
    if from_cookie:
        refused = cross_site_refusal(request, state.config.allowed_origins)
        if refused is not None:
            denied = errors.unauthorized()
            return _http_error(403, XoError(denied.code, denied.message, {"reason": refused}))
    if token is not None:
        try:
            user, expiration = await state.auth.authenticate_token(token, conn.remote)
        except XoError as exc:
            return _http_error(401, exc)
        conn.sign_in(user, expiration)
    try:
        msg = orjson.loads(await read_body(request, state.config.connections.body_timeout_s))
    except BodyError as exc:
        return _http_error(exc.status, errors.RpcError(-32600, str(exc)))
    except orjson.JSONDecodeError:
        err = errors.RpcError(-32700, "invalid JSON").to_wire()
        return web.Response(status=400, body=error_frame(None, err), content_type=_JSON)
    try:
        if isinstance(msg, list):
            if not msg:
                return _invalid(400)
            limit = state.config.limits.max_items
            if len(msg) > limit:
                too_many = errors.RpcError(-32600, f"batch of more than {limit} requests")
                return _http_error(400, too_many)
            frames = await asyncio.gather(*(_one(dispatcher, conn, m) for m in msg))
            body = [f for f in frames if f is not None]
            if not body:
                return web.Response(status=204)
            return web.Response(body=b"[" + b",".join(body) + b"]", content_type=_JSON)
        frame = await _one(dispatcher, conn, msg)
        if frame is None:
            return web.Response(status=204)
        return web.Response(body=frame, content_type=_JSON)
    finally:
        await conn.aclose()


def _http_error(status: int, error: XoError | errors.RpcError) -> web.Response:
    return web.Response(status=status, body=error_frame(None, error.to_wire()), content_type=_JSON)


def _invalid(status: int = 200) -> web.Response:
    return web.Response(status=status, body=_invalid_frame(), content_type=_JSON)


def _invalid_frame() -> bytes:
    return error_frame(None, errors.RpcError(-32600, "invalid JSON-RPC request").to_wire())


async def _one(dispatcher: Dispatcher, conn: Connection, msg: Any) -> bytes | None:
    request = classify(msg)
    if request == NOTIFICATION:
        return None
    if type(request) is not Request:
        return _invalid_frame()
    reply = dispatcher.dispatch(conn, request.id, request.method, request.params)
    return reply if isinstance(reply, bytes) else await reply
