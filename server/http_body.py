"""Reading an HTTP request body within bounds: at most `client_max_size` bytes (aiohttp's
limit, the `[api] max_message_size`) and within `body_timeout`, so a client trickling a body
one byte at a time cannot hold a connection (and a handler) open for ever."""

from __future__ import annotations

import asyncio

from aiohttp import web


class BodyError(Exception):
    """The body was refused: `status` is 413 (too large) or 408 (too slow)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(413, f"request body larger than {request.client_max_size} bytes") from None
    except TimeoutError:
        raise BodyError(408, f"request body not received within {timeout_s:g} s") from None
