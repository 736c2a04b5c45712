"""One-shot HTTP URLs under /api/<token> (xo-server's `$getFrom` / `$sendTo` side channel).

A method registers a producer and returns `{"$getFrom": "/api/<token>"}`; the client fetches
that path once, without authentication (the random token is the capability). Unused URLs expire.
Each owner (user) may hold at most `quota` unfetched URLs: an answer is held in memory until
fetched, so a user cannot pile them up. All URLs share one lifetime, so the oldest are always
first in the table: expiry looks at those only, never at the whole table.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from server import errors

Producer = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OneShotUrls:
    def __init__(self, ttl_s: float = 300.0) -> None:
        self._ttl = ttl_s
        self._entries: dict[str, tuple[float, str, Producer]] = {}  # oldest first
        self._per_owner: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def register(
        self, producer: Producer, suffix: str = "", *, owner: str = "", quota: int = 0
    ) -> str:
        now = time.monotonic()
        self._expire(now)
        if quota and self._per_owner.get(owner, 0) >= quota:
            raise errors.forbidden_operation(
                "download",
                f"{quota} download URLs are already waiting to be fetched: fetch them or"
                f" wait until they expire ({self._ttl:.0f} s)",
            )
        token = secrets.token_urlsafe(24) + suffix
        self._entries[token] = (now + self._ttl, owner, producer)
        self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
        return f"/api/{token}"

    def take(self, token: str) -> Producer | None:
        now = time.monotonic()
        self._expire(now)
        entry = self._entries.pop(token, None)
        if entry is None:
            return None
        self._release(entry[1])
        return entry[2]

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            token = next(iter(entries))
            expires, owner, _ = entries[token]
            if expires > now:
                return
            del entries[token]
            self._release(owner)

    def _release(self, owner: str) -> None:
        left = self._per_owner.get(owner, 1) - 1
        if left > 0:
            self._per_owner[owner] = left
        else:
            self._per_owner.pop(owner, None)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        producer = self.take(request.match_info["token"])
        if producer is None:
            raise web.HTTPNotFound()
        return await producer(request)
