"""Build the aiohttp application: routes, shared state, and everything the server owns.

Routes: GET /api/ (WebSocket, server/websocket.py), POST /api/ (server/http_rpc.py),
GET|POST /api/<token> (one-shot URLs, server/oneshot.py), /rest/v0 (server/rest/), the browser
sign-in /signin, /signin/local, /signout and, behind its gate, the mounted directories of the
web UI for any other URL (server/signin.py, server/static.py).

Lifecycle (`_lifespan`, run by aiohttp's startup/cleanup): open the database, create the
default admin, start the pool manager and connect the stored pools; on shutdown close every
WebSocket (their connections cancel and await their own tasks), stop the pools, stop push,
close the database. Server-owned services of API namespaces (their `lifespan` hooks, see
api/__init__.py) start after the pools and stop before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import api
from server import datadir
from server.acls import AccessControl
from server.auth import Authenticator
from server.config import ServerConfig
from server.credentials import CredentialCipher
from server.db import Database, ServerRecord
from server.dispatch import Dispatcher
from server.gc_tuning import freeze_long_lived
from server.guard import ConnectionGuard
from server.http_rpc import handle_api_post
from server.metrics_http import METRICS
from server.metrics_http import register as register_metrics
from server.oneshot import OneShotUrls
from server.push import PushHub
from server.rest import register as register_rest
from server.signin import WebSignIn
from server.state import ServerState
from server.static import StaticFiles
from server.views import Views
from server.websocket import close_anonymous, handle_api_socket
from xen.store import ObjectStore

log = logging.getLogger("xo_migrate.app")

STATE = web.AppKey("state", ServerState)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
GUARD = web.AppKey("guard", ConnectionGuard)


def _pool_manager_class() -> Any:
    """The pool layer (xen/pools.py); the API still runs (without pools) if it is absent."""
    try:
        from xen.pools import PoolManager
    except ImportError:
        return None
    return PoolManager


def build_state(config: ServerConfig, store: ObjectStore | None = None) -> ServerState:
    """Raises DataDirError (one line) when the data dir is unusable (server/datadir.py)."""
    secret, new_secret = datadir.prepare(config.data_dir)
    db_path = config.data_dir / datadir.DB_NAME
    try:
        db = Database(db_path, CredentialCipher(secret))
    except sqlite3.Error as exc:
        raise datadir.DataDirError(f"cannot open database {db_path}: {exc}") from None
    if new_secret:
        datadir.keep_secret(config.data_dir, secret)
    store = store if store is not None else ObjectStore(config.push_min_interval_s)
    acl = AccessControl(db, config.limits)
    views = Views(store, acl)
    return ServerState(
        config=config,
        store=store,
        db=db,
        auth=Authenticator(db, config.data_dir, config.auth),
        acl=acl,
        views=views,
        push=PushHub(
            store, views, max_frames=config.push_max_frames, max_objects=config.push_max_objects
        ),
        registry=api.build_registry(),
        oneshot=OneShotUrls(),
    )


def build_app(config: ServerConfig, store: ObjectStore | None = None) -> web.Application:
    app = web.Application(client_max_size=config.max_message_size)
    state = build_state(config, store)
    app[STATE] = state
    app[DISPATCHER] = Dispatcher(state)
    # Serve with server.guard.GuardedSite (connection caps and deadlines).
    app[GUARD] = ConnectionGuard(config.connections)
    app.router.add_get("/api/", handle_api_socket)
    app.router.add_post("/api/", handle_api_post)
    app.router.add_route("GET", "/api/{token}", state.oneshot.handle)
    app.router.add_route("POST", "/api/{token}", state.oneshot.handle)
    register_rest(app, state)  # /rest/v0 (server/rest/)
    files = StaticFiles(config.mounts)
    app.router.add_get("/rest/v0/gui-routes", files.handle_gui_routes)  # no authentication
    register_metrics(app, state)  # GET /metrics (server/metrics_http.py)
    WebSignIn(state, files).register(app)  # last: its gate takes every URL left
    app.cleanup_ctx.append(_lifespan)
    app.on_shutdown.append(_close_connections)
    return app


async def _lifespan(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.auth.ensure_default_admin()
    # Expired tokens only ever fail sign-in; nothing else removes them, so purge at start.
    state.db.delete_expired_tokens(time.time())
    _seed_config_pools(state)
    manager_class = _pool_manager_class()
    if manager_class is not None:
        options = app[METRICS].pool_options()
        options.on_synced = freeze_long_lived  # only where the process is tuned as a server
        state.pools = manager_class(state.store, options)
        await state.pools.start()
        for rec in state.db.servers():
            if rec.credentials_error:
                log.warning("event=credentials_unreadable server=%s label=%s", rec.id, rec.label)
            await state.pools.add(rec.to_pool_config())
    else:
        log.warning("event=pools_unavailable reason=xen.pools_missing")
    timeout = state.config.connections.unauthenticated_timeout_s
    sweeper = asyncio.create_task(close_anonymous(state, timeout)) if timeout > 0 else None
    try:
        async with contextlib.AsyncExitStack() as services:
            for hook in api.lifespans():
                await services.enter_async_context(hook(state))
            log.info(
                "event=started pools=%d methods=%d", len(state.db.servers()), len(state.registry)
            )
            yield
            # Sockets are closed by now (on_shutdown): no request can reach a stopped service.
    finally:
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        if state.pools is not None:
            await state.pools.aclose()
        state.push.close()
        state.auth.close()
        state.db.close()
        log.info("event=stopped")


def _seed_config_pools(state: ServerState) -> None:
    """Pools of the config file are stored like `server.add` ones. The file stays the source
    of truth for their address and credentials; enabled/disabled is kept from the database."""
    for cfg in state.config.pools:
        stored = state.db.server(cfg.id)
        rec = ServerRecord.from_pool_config(cfg)
        rec.credentials_error = ""  # the file gives the password again
        if stored is None:
            state.db.add_server(rec)
            continue
        rec.enabled, rec.created_at = stored.enabled, stored.created_at
        state.db.update_server(rec)


async def _close_connections(app: web.Application) -> None:
    conns = list(app[STATE].connections)
    if conns:
        await asyncio.gather(*(c.disconnect() for c in conns), return_exceptions=True)


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if not config.cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.cert_file, config.key_file)
    return ctx
