"""Clients for the conformance tests: the official XenAPI binding (in threads) and raw HTTP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import xmlrpc.client
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import XenAPI

USER, PASSWORD = "root", "password"


def master_url(manifest: dict[str, Any], pool: str = "Pool A") -> str:
    return next(p["master"] for p in manifest["pools"] if p["name"] == pool)


def host_url(manifest: dict[str, Any], address: str) -> str:
    return f"http://{address}:{manifest['port']}/"


def login(url: str) -> XenAPI.Session:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(USER, PASSWORD, "1.0", "tests")
    return session


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def xenapi(url: str, fn: Callable[[Any], Any]) -> Any:
    """Log in, run fn(session.xenapi) in a thread, log out."""

    def work() -> Any:
        session = login(url)
        try:
            return fn(session.xenapi)
        finally:
            session.xenapi.session.logout()

    return await asyncio.to_thread(work)


async def failure(url: str, fn: Callable[[Any], Any]) -> list[str]:
    """The ErrorDescription a call raises (fails the test if it succeeds)."""

    def work() -> list[str]:
        session = login(url)
        try:
            fn(session.xenapi)
        except XenAPI.Failure as exc:
            return list(exc.details)
        finally:
            session.xenapi.session.logout()
        raise AssertionError("call succeeded")

    return await asyncio.to_thread(work)


async def post(url: str, body: bytes | str, path: str = "") -> tuple[int, str, str]:
    """(status, content type, body text) of a raw POST."""
    data = body.encode() if isinstance(body, str) else body
    async with (
        aiohttp.ClientSession() as http,
        http.post(url.rstrip("/") + "/" + path.lstrip("/"), data=data) as resp,
    ):
        return resp.status, resp.content_type, await resp.text()


def call_xml(method: str, *params: Any) -> bytes:
    return xmlrpc.client.dumps(params, method, allow_none=True).encode()


async def raw_call(url: str, method: str, *params: Any) -> Any:
    """A raw XML-RPC call; returns the decoded response struct (the envelope)."""
    _, _, text = await post(url, call_xml(method, *params))
    return xmlrpc.client.loads(text)[0][0]


async def raw_login(url: str) -> str:
    reply = await raw_call(url, "session.login_with_password", USER, PASSWORD)
    assert reply["Status"] == "Success", reply
    return reply["Value"]


@contextlib.asynccontextmanager
async def cli_sim(manifest: Path, **options: Any) -> AsyncIterator[dict[str, Any]]:
    """`xo-migrate sim --manifest <manifest> ...` running in-process: its manifest, then stop."""
    from xen.sim.main import serve

    args = {"lab": None, "port": 0, "time_scale": 0.01, "https": None, "seed": None, **options}
    stop = asyncio.Event()
    server = asyncio.ensure_future(serve(argparse.Namespace(manifest=str(manifest), **args), stop))
    try:
        for _ in range(200):
            if server.done() or await asyncio.to_thread(manifest.exists):
                break
            await asyncio.sleep(0.02)
        doc: dict[str, Any] = json.loads(await asyncio.to_thread(manifest.read_text))
        yield doc
    finally:
        stop.set()
        await asyncio.wait_for(server, 5)
