"""JSON-RPC over xo-migrate's WebSocket (`/api/`), as xo-lib speaks it: requests with integer
ids, answers matched by id, `all` notifications (pushed object changes) handed to listeners.

The reader task belongs to the connection: `close()` cancels and awaits it. A lost socket fails
every pending call and sets `lost`, so a command waiting on pushed changes can notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from client.errors import CliError, RpcError

Listener = Callable[[dict[str, Any]], None]

CONNECT_TIMEOUT_S = 10.0


def api_url(server: str) -> str:
    """`http://host:port` (or https, ws, wss, with or without `/api/`) -> the WebSocket URL."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise CliError(f"{server!r} is not an http(s):// or ws(s):// URL", exit_code=2)
    path = parts.path if parts.path.endswith("/api/") else parts.path.rstrip("/") + "/api/"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class Connection:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._listeners: list[Listener] = []
        self.lost = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="xo-migrate-client-reader")

    @classmethod
    async def open(cls, server: str, *, allow_unauthorized: bool = False) -> Connection:
        url = api_url(server)
        ssl_option: ssl.SSLContext | bool = False if allow_unauthorized else True
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT_S))
        try:
            ws = await session.ws_connect(
                url, ssl=ssl_option, max_msg_size=256 * 1024 * 1024, heartbeat=30
            )
        except aiohttp.ClientConnectorCertificateError as exc:
            await session.close()
            raise CliError(
                f"cannot connect to {url}: untrusted certificate ({exc.certificate_error})",
                hint="log in again with --allow-unauthorized to accept a self-signed certificate",
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await session.close()
            reason = str(exc) or type(exc).__name__
            raise CliError(f"cannot connect to {url}: {reason}") from None
        return cls(session, ws)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()
        await self._session.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(params)` for every `all` notification; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self.lost.is_set():
            raise CliError("the connection to the server is lost")
        self._next_id += 1
        request_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send_bytes(orjson.dumps(message))
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._handle(orjson.loads(msg.data))
        finally:
            self.lost.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CliError("the connection to the server was lost"))

    def _handle(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if "method" in data:
            if data["method"] == "all" and isinstance(data.get("params"), dict):
                for listener in list(self._listeners):
                    listener(data["params"])
            return
        future = self._pending.get(data.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return
        if "error" in data:
            future.set_exception(RpcError(data["error"] or {}))
        else:
            future.set_result(data.get("result"))


async def signed_in(server: str, token: str, *, allow_unauthorized: bool = False) -> Connection:
    """A connection signed in with a stored token (pushed changes start flowing)."""
    conn = await Connection.open(server, allow_unauthorized=allow_unauthorized)
    try:
        await conn.call("session.signIn", {"token": token})
    except RpcError as exc:
        await conn.close()
        if exc.code in (3, 8):  # invalid credentials / authentication failed
            raise CliError(
                f"the server refused the stored token: {exc.message}",
                hint="log in again: xo-migrate login URL",
            ) from None
        raise
    except BaseException:
        await conn.close()
        raise
    return conn
