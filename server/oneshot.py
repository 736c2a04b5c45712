"""One-shot HTTP URLs under /api/<token> (xo-server's `$getFrom` / `$sendTo` side channel).

A method registers a producer and returns `{"$getFrom": "/api/<token>"}`; the client fetches
that path once, without authentication (the random token is the capability). Unused URLs expire.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

Producer = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OneShotUrls:
    def __init__(self, ttl_s: float = 300.0) -> None:
        self._ttl = ttl_s
        self._entries: dict[str, tuple[float, Producer]] = {}

    def register(self, producer: Producer, suffix: str = "") -> str:
        now = time.monotonic()
        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        token = secrets.token_urlsafe(24) + suffix
        self._entries[token] = (now + self._ttl, producer)
        return f"/api/{token}"

    def take(self, token: str) -> Producer | None:
        entry = self._entries.pop(token, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        producer = self.take(request.match_info["token"])
        if producer is None:
            raise web.HTTPNotFound()
        return await producer(request)
