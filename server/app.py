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
from server.cluster import cluster_of
from server.config import ServerConfig
from server.credentials import CredentialCipher
from server.dispatch import Dispatcher
from server.forwarded import forwarded_client_middleware
from server.gc_tuning import full_sync
from server.guard import ConnectionGuard
from server.http_rpc import handle_api_post
from server.metrics_http import METRICS
from server.metrics_http import register as register_metrics
from server.netaddr import TrustedProxies
from server.oneshot import OneShotUrls
from server.push import PushHub
from server.rest import register as register_rest
from server.signin import WebSignIn
from server.state import ServerState
from server.static import StaticFiles
from server.storage import Storage, StorageUnavailable, sqlite_path
from server.storage.records import ServerRecord
from server.storage.redis import RedisStorage
from server.storage.sqlite import SqliteStorage
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
    storage, secret, new_secret = open_storage(config)
    store = store if store is not None else ObjectStore(config.push_min_interval_s)
    acl = AccessControl(storage, config.limits)  # loaded at start (_lifespan)
    views = Views(store, acl)
    return ServerState(
        config=config,
        store=store,
        storage=storage,
        auth=Authenticator(storage, secret, config.auth),
        acl=acl,
        views=views,
        push=PushHub(
            store, views, max_frames=config.push_max_frames, max_objects=config.push_max_objects
        ),
        registry=api.build_registry(),
        oneshot=OneShotUrls(),
        secret=secret,
        new_secret=new_secret,
    )


def open_storage(config: ServerConfig) -> tuple[Storage, bytes, bool]:
    """The store `[database] url` names, the server secret and whether it is new (written
    once the store is known to accept it: at once for SQLite, after the cluster's check for
    Redis)."""
    kind = config.database.kind
    db_path = sqlite_path(config.database.url, config.data_dir) if kind == "sqlite" else None
    secret, new_secret = datadir.prepare(config.data_dir, db_path)
    cipher = CredentialCipher(secret)
    if db_path is None:
        return RedisStorage(config.database.url, cipher), secret, new_secret
    try:
        storage = SqliteStorage(db_path, cipher)
    except sqlite3.Error as exc:
        raise datadir.DataDirError(f"cannot open database {db_path}: {exc}") from None
    if new_secret:
        datadir.keep_secret(config.data_dir, secret)
    return storage, secret, False


def build_app(config: ServerConfig, store: ObjectStore | None = None) -> web.Application:
    proxies = TrustedProxies(config.trusted_proxies)
    middlewares = [forwarded_client_middleware(proxies)] if proxies else []
    app = web.Application(client_max_size=config.max_message_size, middlewares=middlewares)
    state = build_state(config, store)
    app[STATE] = state
    app[DISPATCHER] = Dispatcher(state)
    # Serve with server.guard.GuardedSite (connection caps and deadlines).
    app[GUARD] = ConnectionGuard(config.connections, proxies)
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
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_close_state, state)
        try:
            await state.storage.open()
        except StorageUnavailable as exc:
            raise datadir.DataDirError(str(exc)) from None
        if state.storage.shared:
            state.cluster = await stack.enter_async_context(cluster_of(state))
        await state.acl.load()
        await state.auth.ensure_default_admin()
        # Expired tokens only ever fail sign-in; nothing else removes them, so purge at start.
        await state.storage.delete_expired_tokens(time.time())
        await _seed_config_pools(state)
        manager_class = _pool_manager_class()
        if manager_class is not None:
            options = app[METRICS].pool_options()
            options.full_sync = full_sync  # acts only where the process is tuned as a server
            state.pools = manager_class(state.store, options)
            await state.pools.start()
            stack.push_async_callback(state.pools.aclose)
            for rec in await state.storage.servers():
                if rec.credentials_error:
                    log.warning(
                        "event=credentials_unreadable server=%s label=%s", rec.id, rec.label
                    )
                await state.pools.add(rec.to_pool_config())
        else:
            log.warning("event=pools_unavailable reason=xen.pools_missing")
        timeout = state.config.connections.unauthenticated_timeout_s
        if timeout > 0:
            sweeper = asyncio.create_task(close_anonymous(state, timeout))
            stack.push_async_callback(_cancel, sweeper)
        if state.cluster is not None:
            await state.cluster.start(state)
        for hook in api.lifespans():
            await stack.enter_async_context(hook(state))
        log.info(
            "event=started pools=%d methods=%d storage=%s",
            len(await state.storage.servers()),
            len(state.registry),
            state.storage.kind,
        )
        yield
        # Sockets are closed by now (on_shutdown): no request can reach a stopped service.


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _close_state(state: ServerState) -> None:
    state.push.close()
    state.auth.close()
    await state.storage.close()
    log.info("event=stopped")


async def _seed_config_pools(state: ServerState) -> None:
    """Pools of the config file are stored like `server.add` ones. The file stays the source
    of truth for their address and credentials; enabled/disabled is kept from the database."""
    for cfg in state.config.pools:
        stored = await state.storage.server(cfg.id)
        rec = ServerRecord.from_pool_config(cfg)
        rec.credentials_error = ""  # the file gives the password again
        if stored is None:
            await state.storage.add_server(rec)
            continue
        rec.enabled, rec.created_at = stored.enabled, stored.created_at
        await state.storage.update_server(rec)


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
