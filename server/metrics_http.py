"""GET /metrics: the Prometheus exposition of server/metrics.py, and what it needs to run.

On the API port, /metrics wants an admin: `Authorization: Bearer <token>` or the
`authenticationToken` / `token` cookie (as the REST API); no token or a bad one is 401, a
non-admin's 403. `[metrics] listen` adds a second listener that serves only /metrics, without
authentication (for a Prometheus on the same host or a trusted network).

`register` wires it into the app: the route (before the web sign-in's catch-all gate), and a
lifespan that owns the event-loop lag sampler task and the optional listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from server.errors import XoError
from server.loop_lag import sample_loop_lag
from server.metrics import ServerMetrics
from server.state import ServerState

log = logging.getLogger("xo_migrate.metrics")

METRICS = web.AppKey("metrics", ServerMetrics)
PATH = "/metrics"


def register(app: web.Application, state: ServerState) -> ServerMetrics:
    """Create the server's metrics and expose them; returns them (the pool manager's
    connection options come from them)."""
    metrics = ServerMetrics(state)
    app[METRICS] = metrics
    if state.config.metrics.enabled:
        app.router.add_get(PATH, _guarded(state, metrics))
    app.cleanup_ctx.append(_lifespan)
    return metrics


def _response(metrics: ServerMetrics) -> web.Response:
    response = web.Response(body=metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get("authenticationToken") or request.cookies.get("token") or None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(state: ServerState, metrics: ServerMetrics) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        token = _token(request)
        if token is None:
            return _refusal(401, "authentication required: an admin's token")
        try:
            user, _expiration = await state.auth.authenticate_token(token, request.remote or "?")
        except XoError:
            return _refusal(401, "invalid or expired token")
        if user.permission != "admin":
            return _refusal(403, "metrics are for admins")
        return _response(metrics)

    return handle


def _refusal(status: int, reason: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="xo-migrate"'} if status == 401 else None
    return web.Response(status=status, text=reason + "\n", headers=headers)


async def _lifespan(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    settings = metrics.state.config.metrics
    sampler = asyncio.create_task(
        sample_loop_lag(metrics.loop_lag.observe, settings.lag_interval_s), name="loop-lag"
    )
    listener: web.AppRunner | None = None
    try:
        if settings.listen is not None:
            listener = await _start_listener(metrics, *settings.listen)
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        if listener is not None:
            await listener.cleanup()
        metrics.close()


async def _start_listener(metrics: ServerMetrics, host: str, port: int) -> web.AppRunner:
    """The open /metrics listener; its bound port is kept in `metrics.listen_port`."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        return _response(metrics)

    app = web.Application()
    app.router.add_get(PATH, handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    metrics.listen_port = runner.addresses[0][1]
    log.info("event=metrics_listening host=%s port=%d", host, metrics.listen_port)
    return runner
