"""One API caller: who is signed in, until when, and the tasks it owns.

A WebSocket connection lives as long as its socket; an HTTP request gets a short-lived one
(no push). Requests run as tasks owned by the connection, cancelled and awaited when it closes;
work that must survive the caller (migrations) is owned by a server service instead.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from server.push import Outbox, PushHub
from server.storage.records import User

_ids = itertools.count(1)


class Connection:
    __slots__ = (
        "_hub",
        "_kick",
        "_outbox",
        "_send",
        "_tasks",
        "anonymous_since",
        "closed",
        "expiration",
        "id",
        "remote",
        "token_hash",
        "user",
    )

    def __init__(
        self,
        remote: str,
        *,
        hub: PushHub | None = None,
        send: Callable[[bytes], Awaitable[None]] | None = None,
        kick: Callable[..., Awaitable[None]] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.remote = remote
        self.user: User | None = None
        self.expiration: float | None = None  # epoch seconds, for token sign-ins
        # SHA-256 of the token this connection signed in with: deleting it closes the connection.
        self.token_hash: str | None = None
        # Monotonic time since which nobody is signed in (websocket.close_anonymous reads it).
        self.anonymous_since = time.monotonic()
        self.closed = False
        self._hub = hub
        self._send = send
        self._kick = kick
        self._outbox: Outbox | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"Connection(id={self.id}, remote={self.remote!r})"

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.permission == "admin"

    def expired(self) -> bool:
        return self.expiration is not None and time.time() >= self.expiration

    def sign_in(self, user: User, expiration: float | None, token_hash: str | None = None) -> None:
        self.user = user
        self.expiration = expiration
        self.token_hash = token_hash
        hub, send, kick = self._hub, self._send, self._kick
        if hub is None or send is None or kick is None or self.closed:
            return
        if self._outbox is None:
            self._outbox = Outbox(hub.max_frames, hub.max_objects)
            self.spawn(self._outbox.run(send, kick))
        hub.add(self, self._outbox)

    def sign_out(self) -> None:
        if self.user is not None:
            self.anonymous_since = time.monotonic()
        self.user = None
        self.expiration = None
        self.token_hash = None
        if self._hub is not None:
            self._hub.discard(self)
        if self._outbox is not None:
            self._outbox.clear()

    def end_after_reply(self) -> None:
        """Revoked while answering its own request: sign out now (no more notifications) and,
        like an expired token session, close silently on the next message."""
        self.sign_out()
        self.expiration = 0.0

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_for_capacity(self, limit: int) -> None:
        """Backpressure: stop reading requests while `limit` tasks are already running."""
        while len(self._tasks) >= limit:
            await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    async def disconnect(self, code: int | None = None) -> None:
        """Close the transport (WebSocket, with `code` if given); its handler then calls
        `aclose`."""
        if self._kick is not None:
            await (self._kick() if code is None else self._kick(code))

    async def aclose(self) -> None:
        """Stop notifications, cancel and await every task this connection owns."""
        self.closed = True
        if self._hub is not None:
            self._hub.discard(self)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
