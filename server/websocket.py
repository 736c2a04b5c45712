"""WS /api/: the xo-server JSON-RPC WebSocket (xo-server-api.md section 1).

One JSON-RPC message per frame (text; binary frames are read as UTF-8 text too, as xo-server
stringifies them). Invalid JSON, invalid requests, notifications and batches get no reply at
all, exactly as xo-server. Each request gets exactly one response with its id echoed verbatim.
Synchronous methods are answered inline; coroutine methods run as tasks owned by the
connection (so a long call never blocks the others and is cancelled when the socket closes).
A token sign-in sets an expiration: the first message after it closes the socket silently.

Connections are kept honest: a ping every `websocket_heartbeat` (no pong within half of it
closes the socket), and a socket nobody is signed in on (never, or no more) is closed after
`unauthenticated_timeout` with code 1008 (policy violation). A message may be exactly
`max_message_size` bytes; one byte more closes the socket with 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from server.connection import Connection
from server.dispatch import Dispatcher
from server.framing import Request, classify
from server.state import ServerState

log = logging.getLogger("xo_migrate.ws")

_CLOSE_TIMEOUT_S = 2.0
# Requests of one connection running at once; past this the socket is not read until one ends
# (backpressure on that client only; xo-lib never comes close).
MAX_INFLIGHT = 1024


async def handle_api_socket(request: web.Request) -> web.StreamResponse:
    from server.app import DISPATCHER, STATE  # the app module imports this one

    state: ServerState = request.app[STATE]
    dispatcher: Dispatcher = request.app[DISPATCHER]
    if request.query_string:
        # xo-server only upgrades when the URL is exactly "/api/".
        raise web.HTTPNotFound()
    ws = web.WebSocketResponse(
        compress=False,  # one serialization per change for every client: no per-socket deflate
        # aiohttp refuses a message of exactly `max_msg_size` bytes: allow that one.
        max_msg_size=state.config.max_message_size + 1,
        autoping=True,
        heartbeat=state.config.connections.websocket_heartbeat_s or None,
    )
    if not ws.can_prepare(request).ok:
        return web.Response(status=426, text="WebSocket upgrade required\n")
    await ws.prepare(request)
    remote = request.remote or "?"

    async def send(frame: bytes) -> None:
        if ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await ws.send_frame(frame, WSMsgType.TEXT)

    async def kick(code: int = WSCloseCode.TRY_AGAIN_LATER) -> None:
        """Disconnect (push backlog overflow, server shutdown, never signed in), even from a
        stuck peer."""
        try:
            await asyncio.wait_for(ws.close(code=code), _CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            if request.transport is not None:
                request.transport.abort()

    conn = Connection(remote, hub=state.push, send=send, kick=kick)
    state.connections.add(conn)
    log.debug("event=ws_open conn=%d remote=%s", conn.id, remote)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                if conn.expiration is not None and conn.expired():
                    log.info("event=session_expired conn=%d remote=%s", conn.id, remote)
                    break  # silently: no reply to this request
                reply = _handle_frame(dispatcher, conn, msg.data)
                if reply is None:
                    continue
                if isinstance(reply, bytes):
                    await send(reply)
                else:
                    task = conn.spawn(_reply_when_done(reply, send))
                    task.add_done_callback(functools.partial(_close_reply, reply))
                    await conn.wait_for_capacity(MAX_INFLIGHT)
            elif msg.type is WSMsgType.ERROR:
                log.info("event=ws_error conn=%d error=%r", conn.id, ws.exception())
    finally:
        state.connections.discard(conn)
        await conn.aclose()
        if not ws.closed:
            await ws.close()
        log.debug("event=ws_close conn=%d", conn.id)
    return ws


def _handle_frame(
    dispatcher: Dispatcher, conn: Connection, data: str | bytes
) -> bytes | Coroutine[Any, Any, bytes | None] | None:
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.debug("event=invalid_json conn=%d size=%d", conn.id, len(data))
        return None
    request = classify(msg)
    if type(request) is not Request:
        log.debug("event=ignored_message conn=%d kind=%s", conn.id, request)
        return None
    return dispatcher.dispatch(conn, request.id, request.method, request.params)


def _close_reply(reply: Coroutine[Any, Any, bytes | None], _task: asyncio.Task[None]) -> None:
    """A reply task cancelled before its first step (the socket closed at once) never awaited
    `reply`: close it so that it is not reported as leaked (a no-op once it has run)."""
    reply.close()


async def _reply_when_done(reply: Coroutine[Any, Any, bytes | None], send: Any) -> None:
    frame = await reply
    if frame is not None:
        await send(frame)


async def close_anonymous(state: ServerState, timeout_s: float) -> None:
    """Close (1008) the WebSockets nobody has been signed in on for `timeout_s`: never, or no
    more since a sign-out. One task for the whole server (server/app.py owns it), checking
    every few seconds: no timer per connection."""
    period = min(5.0, max(0.05, timeout_s / 4))
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        doomed = [
            c
            for c in state.connections
            if c.user is None and not c.closed and now - c.anonymous_since >= timeout_s
        ]
        for conn in doomed:
            log.info("event=ws_unauthenticated_timeout conn=%d remote=%s", conn.id, conn.remote)
        if doomed:
            await asyncio.gather(
                *(c.disconnect(WSCloseCode.POLICY_VIOLATION) for c in doomed),
                return_exceptions=True,
            )
