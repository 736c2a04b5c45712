"""POST /api/: the same JSON-RPC methods over plain HTTP, for services.

Authentication: `Authorization: Bearer <token>`, the `authenticationToken` cookie (the REST
cookie xo-cli sends) or the `token` cookie (the web UI's); without any, the caller is anonymous
(public methods only). A bad or expired token is 401 with a code 3 error. Unlike the WebSocket
(which mirrors xo-server's silence), HTTP follows JSON-RPC 2.0 to the letter: batches are allowed, invalid JSON gets
-32700 and invalid requests -32600 (id null), and a body of notifications only gets 204.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from server import errors
from server.connection import Connection
from server.dispatch import Dispatcher, error_frame
from server.errors import XoError
from server.framing import NOTIFICATION, Request, classify
from server.state import ServerState

_JSON = "application/json"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # `token` is the web UI's cookie (server/signin.py); xo-server's REST API reads it too.
    return request.cookies.get("authenticationToken") or request.cookies.get("token") or None


async def handle_api_post(request: web.Request) -> web.StreamResponse:
    from server.app import DISPATCHER, STATE

    state: ServerState = request.app[STATE]
    dispatcher: Dispatcher = request.app[DISPATCHER]
    conn = Connection(request.remote or "?")
    token = _bearer(request)
    if token is not None:
        try:
            user, expiration = state.auth.authenticate_token(token, conn.remote)
        except XoError as exc:
            return web.Response(
                status=401, body=error_frame(None, exc.to_wire()), content_type=_JSON
            )
        conn.sign_in(user, expiration)
    try:
        msg = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        err = errors.RpcError(-32700, "invalid JSON").to_wire()
        return web.Response(status=400, body=error_frame(None, err), content_type=_JSON)
    try:
        if isinstance(msg, list):
            if not msg:
                return _invalid(400)
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
