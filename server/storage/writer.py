"""Write-behind: changes kept by key and written by one background task, so that a burst of
changes (200 migrations admitted at once) costs a few writes, not hundreds.

`flush()` returns once everything marked before the call is written: what an API call must
wait for before it answers ("acknowledged means committed"). A write the store refuses
(StorageUnavailable: Redis lost) is kept and tried again until it goes through; newer marks
of the same key replace it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from server.storage.base import StorageUnavailable

log = logging.getLogger("xo_migrate.storage")

V = TypeVar("V")
RETRY_S = 0.5


class WriteBehind(Generic[V]):
    def __init__(self, name: str, write: Callable[[list[V]], Awaitable[None]]) -> None:
        self._name = name
        self._write = write
        self._pending: dict[str, V] = {}
        self._marked = 0  # generation of the last mark
        self._written = 0  # generation written
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def mark(self, key: str, item: V) -> None:
        self._pending[key] = item
        self._marked += 1
        self._wake.set()
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name=f"write-behind-{self._name}")

    async def flush(self) -> None:
        """Return once what was marked so far is written (waits while the store is down)."""
        target = self._marked
        if self._written >= target:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target)

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if not await self._write_pending():
                # Try again soon; a new mark or aclose() does not wait for the pause.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_S):
                        await self._wake.wait()
                self._wake.set()

    async def _write_pending(self) -> bool:
        pending, generation = self._pending, self._marked
        self._pending = {}
        if pending:
            try:
                await self._write(list(pending.values()))
            except StorageUnavailable:
                for key, item in pending.items():  # newer marks win
                    self._pending.setdefault(key, item)
                return False
        self._written = generation
        async with self._progress:
            self._progress.notify_all()
        return True

    async def aclose(self) -> None:
        """Let the write in flight end (it is never cut in half), then a last write of what
        is pending, if the store takes it."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pending:
            await self._write_pending()
            if self._pending:
                log.warning("event=writes_lost store=%s records=%d", self._name, len(self._pending))
