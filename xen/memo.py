"""A small time-to-live memo for answers worth reusing for a few seconds (xo-server's TTL caches
and debounces around XAPI reads: secure boot readiness 30 s, host clock shift 60 s, one stats
download per host and granularity).

Concurrent askers of a missing key share one computation: the first computes while holding the
key's lock, the others wait for it and read its answer. Failures are not memoized. Nothing runs
in the background: entries expire when read, and expired ones are swept when the memo grows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
_MISS = object()
_SWEEP_FROM = 16  # entries: below this, expired ones are dropped when read


class TtlMemo:
    def __init__(self, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic):
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, Any]] = {}  # key -> (expiry, value)
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def _fresh(self, key: Hashable) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return _MISS
        if entry[0] <= self._clock():
            del self._entries[key]
            return _MISS
        return entry[1]

    async def get(self, key: Hashable, ttl: float, produce: Callable[[], Awaitable[T]]) -> T:
        """The value memoized under `key`, computed by `produce()` when missing or expired."""
        value = self._fresh(key)
        if value is not _MISS:
            return value  # type: ignore[no-any-return]
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        try:
            async with lock:
                value = self._fresh(key)
                if value is not _MISS:
                    return value  # type: ignore[no-any-return]
                fresh = await produce()
                self._store(key, ttl, fresh)
                return fresh
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def _store(self, key: Hashable, ttl: float, value: Any) -> None:
        now = self._clock()
        if len(self._entries) >= _SWEEP_FROM:
            # Expired answers (a stats download can weigh megabytes) do not wait to be read.
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
        if len(self._entries) >= self._max_entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest insertion
        self._entries[key] = (now + ttl, value)

    def __len__(self) -> int:
        return len(self._entries)
