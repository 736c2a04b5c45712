"""A test client that behaves like xo-lib / xo-cli on the wire (xo-server-api.md 7 and 8).

- connects to ws://host:port/api/ with aiohttp (no cookie, no subprotocol);
- request ids are integers starting at -9007199254740991 (Number.MIN_SAFE_INTEGER), +1 each;
- the `params` member is omitted when there are no params (as xo-lib does);
- notifications are collected in `notifications` (an asyncio.Queue of params).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson

MIN_SAFE_INTEGER = -9007199254740991


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error
        self.code = error.get("code")
        self.data = error.get("data")


class XoClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self._next_id = MIN_SAFE_INTEGER
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: list[str] = []  # every raw frame received, for exact-shape assertions
        self.unexpected: list[Any] = []  # responses to ids we never sent (must stay empty)
        self.closed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, local_addr: str | None = None, headers: dict[str, str] | None = None
    ) -> XoClient:
        """`local_addr`: the loopback address to connect from (another client, as the
        server's per-address limits see it); `headers`: added to the upgrade request (as a
        reverse proxy adds X-Forwarded-For)."""
        connector = aiohttp.TCPConnector(local_addr=(local_addr, 0)) if local_addr else None
        session = aiohttp.ClientSession(connector=connector)
        try:
            ws = await session.ws_connect(
                url, autoping=True, max_msg_size=64 * 1024 * 1024, headers=headers
            )
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    self.unexpected.append(("non-text frame", msg.type))
                    continue
                self.frames.append(msg.data)
                data = orjson.loads(msg.data)
                if "method" in data:
                    assert "id" not in data, data  # the server never sends requests
                    self.notifications.put_nowait(data)
                    continue
                fut = self._pending.pop(data.get("id"), None)
                if fut is None:
                    self.unexpected.append(data)
                elif not fut.done():
                    fut.set_result(data)
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection has been closed"))

    def next_id(self) -> int:
        req_id = self._next_id
        self._next_id += 1
        return req_id

    async def send_raw(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            await self.ws.send_str(orjson.dumps(message).decode())
        elif isinstance(message, bytes):
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_str(message)

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        req_id: Any = None,
        version: str | None = "2.0",
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send one request; the whole response message."""
        req_id = self.next_id() if req_id is None else req_id
        message: dict[str, Any] = {"id": req_id}
        if version is not None:
            message["jsonrpc"] = version
        message["method"] = method
        if params is not None:
            message["params"] = params
        return await self.request_raw(message, req_id, timeout=timeout)

    async def request_raw(
        self, frame: dict[str, Any] | str | bytes, req_id: Any, *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send a frame built by the caller; the response carrying `req_id`."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        await self.send_raw(frame)
        return await asyncio.wait_for(fut, timeout)

    async def call(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
        response = await self.request(method, params, timeout=timeout)
        if "error" in response:
            raise RpcError(response["error"])
        return response["result"]

    async def sign_in(self, email: str = "admin@admin.net", password: str = "admin") -> Any:
        return await self.call("session.signIn", {"email": email, "password": password})

    async def next_notification(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.notifications.get(), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self.session.close()
