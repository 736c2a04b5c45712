"""What every REST handler shares: the server state, shutdown, and bounded waiting.

Long requests (`?wait=true`, `?sync=true`, `?watch=true`) must end when their client goes away
or when the server shuts down. aiohttp does not cancel a handler whose client disconnected
(`handler_cancellation` is off), so waits are sliced: every `POLL_S` the handler checks its
transport and the shutdown flag, and gives up if either says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from server import errors
from server.state import ServerState

POLL_S = 0.5  # how soon a long request notices a departed client or a shutdown
_MAX_ABORTS = 1000  # remembered abort requests (task id -> time), oldest forgotten first


@dataclass(eq=False, slots=True)
class RestContext:
    state: ServerState
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    open_streams: int = 0  # `?watch=true` streams being served (tests and logs read it)
    aborts: dict[str, int] = field(default_factory=dict)  # task id -> abortionRequestedAt (ms)

    def migrations(self) -> Any:
        service = self.state.services.get("migrations")
        if service is None:
            raise errors.service_unavailable("migrations")
        return service

    def note_abort(self, task_id: str) -> None:
        self.aborts.setdefault(task_id, int(time.time() * 1000))
        while len(self.aborts) > _MAX_ABORTS:
            self.aborts.pop(next(iter(self.aborts)))

    async def on_shutdown(self, _app: web.Application) -> None:
        self.closing.set()

    def gone(self, request: web.Request) -> bool:
        """The client went away, or the server is stopping: stop serving this request."""
        transport = request.transport
        return self.closing.is_set() or transport is None or transport.is_closing()

    async def hold(self, request: web.Request, wait: Callable[[], Awaitable[Any]]) -> bool:
        """Await `wait()` (restarted every POLL_S, so it must be restartable) while the client
        is there; True once it returned, False if the client or the server went away."""
        while not self.gone(request):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await wait()
                    return True
        return False


REST = web.AppKey("rest", RestContext)
