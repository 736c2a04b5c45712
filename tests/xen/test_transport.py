"""Which XAPI endpoint carries what: event.from over JSON-RPC (its answers are the big ones),
XML-RPC otherwise, and XML-RPC for everything on a host without JSON-RPC (XAPI before
XenServer 7.3). A recording HTTP relay sits between the client and the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.xen.helpers import FAST, eventually, pool_config, pool_objects
from xen.config import PoolConfig
from xen.pools import PoolManager
from xen.store import ObjectStore

pytestmark = pytest.mark.timeout(60)


@dataclass
class Relay:
    url: str
    posts: list[str] = field(default_factory=list)  # "<path> <method>" of each request


@asynccontextmanager
async def relay_to(target: str, *, json_rpc: bool) -> AsyncIterator[Relay]:
    """An HTTP relay to `target`; without `json_rpc`, /jsonrpc answers 404 as old XAPI."""
    relay = Relay("")
    async with aiohttp.ClientSession() as http:

        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            name = (
                body.split(b"<methodName>")[-1].split(b"<")[0] if b"<methodName>" in body else b""
            )
            if request.path == "/jsonrpc":
                name = body.split(b'"method":"')[-1].split(b'"')[0]
            relay.posts.append(f"{request.path} {name.decode()}")
            if request.path == "/jsonrpc" and not json_rpc:
                return web.Response(status=404, text="not found")
            async with http.post(target.rstrip("/") + request.path, data=body) as reply:
                return web.Response(
                    status=reply.status,
                    body=await reply.read(),
                    content_type=reply.content_type,
                )

        app = web.Application(client_max_size=2**30)
        app.router.add_post("/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        relay.url = f"http://127.0.0.1:{port}/"
        try:
            yield relay
        finally:
            await runner.cleanup()


async def _sync_through(relay: Relay, cfg: PoolConfig, store: ObjectStore) -> PoolManager:
    manager = PoolManager(store, FAST)
    await manager.start()
    relayed = PoolConfig(
        id=cfg.id, url=relay.url, username=cfg.username, password=cfg.password, label=cfg.label
    )
    await manager.add(relayed)
    conn = manager.connection(cfg.id)
    assert conn is not None
    await conn.wait_ready(15)
    return manager


@pytest.mark.parametrize("json_rpc", [True, False])
async def test_event_stream_endpoint(sim, json_rpc: bool) -> None:
    cfg = pool_config(sim.manifest(), "Pool A")
    store = ObjectStore()
    async with relay_to(cfg.url, json_rpc=json_rpc) as relay:
        manager = await _sync_through(relay, cfg, store)
        try:
            objects = pool_objects(store, sim.pool("Pool A").uuid)
            assert sum(o["type"] == "VM" for o in objects.values()) >= 10
            # A change arrives through the long-poll as well.
            db = sim.pool("Pool A").db
            vm_ref = db.find_one("VM", name_label="web-01")
            db.update("VM", vm_ref, name_label="renamed")
            vm_id = db.get("VM", vm_ref)["uuid"]
            await eventually(lambda: store.get(vm_id)["name_label"] == "renamed", 3, "rename")
            conn = manager.connection(cfg.id)
            assert conn is not None
            assert await conn.call("pool.get_all")  # ordinary calls: XML-RPC either way
        finally:
            await manager.aclose()
    assert "/ session.login_with_password" in relay.posts
    assert "/ pool.get_all" in relay.posts
    events_json = [p for p in relay.posts if p == "/jsonrpc event.from"]
    events_xml = [p for p in relay.posts if p == "/ event.from"]
    if json_rpc:
        assert len(events_json) >= 2 and not events_xml
    else:
        # One try at JSON-RPC, then XML-RPC for good.
        assert len(events_json) == 1 and len(events_xml) >= 2
