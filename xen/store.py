"""The live object collection, in xo-server's shape, shared by every pool and the API.

Objects are plain dicts keyed by their XO `id` (a XAPI uuid, or a migration id). Writers call
`set` / `remove`; the store coalesces changes per object id and flushes them to subscribers
once per event-loop tick, like xo-collection's buffered events: an object both added and
removed inside one flush is never announced, and the last write wins.

Subscribers are plain callables run synchronously at flush time so that a push hub can
serialize a change set once and fan it out without extra copies.

One id, two pools: a VM migrating across pools keeps its uuid, and the target pool shows it
(halted, being received) while the source still runs it. The pool that published an id first
keeps it; the other pool's object waits as a claim (updated, never announced) and is
published when the first pool withdraws its own (`withdraw`: the source deleted the VM at the
end of the migration, or that pool was disconnected). So clients keep seeing the running VM,
its task and its progress until it has arrived, instead of a halted copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("xo_migrate.store")

XoObject = dict[str, Any]


@dataclass(slots=True)
class ChangeSet:
    """One flush: objects that entered (added or updated) and ids that exited."""

    enter: dict[str, XoObject] = field(default_factory=dict)
    exit: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.enter or self.exit)


Subscriber = Callable[[ChangeSet], None]


class ObjectStore:
    """`min_flush_interval` (seconds) spaces flushes out: changes arriving sooner after a
    flush wait and are coalesced with the next ones, so a burst of updates costs a few
    flushes (and pushes) instead of one per event-loop tick. 0 = flush at the next tick."""

    def __init__(self, min_flush_interval: float = 0.0) -> None:
        self.min_flush_interval = min_flush_interval
        self._last_flush = float("-inf")
        self._objects: dict[str, XoObject] = {}
        self._by_type: dict[str, dict[str, XoObject]] = {}
        # (pool id, XAPI ref) -> object id; refs are only unique inside one pool.
        self._by_ref: dict[tuple[str, str], str] = {}
        # id -> {pool id -> object}: other pools' objects for an id published by another pool.
        self._claims: dict[str, dict[str, XoObject]] = {}
        self._subscribers: list[Subscriber] = []
        self._pending = ChangeSet()
        # Ids first seen during the pending flush: removing one again announces nothing.
        self._pending_new: set[str] = set()
        self._flush_scheduled = False

    # -- reads ---------------------------------------------------------------------------

    def get(self, obj_id: str) -> XoObject | None:
        return self._objects.get(obj_id)

    def __contains__(self, obj_id: object) -> bool:
        return obj_id in self._objects

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[XoObject]:
        return iter(list(self._objects.values()))

    def all(self) -> dict[str, XoObject]:
        return self._objects

    def by_type(self, obj_type: str) -> list[XoObject]:
        return list(self._by_type.get(obj_type, {}).values())

    def by_ref(self, pool_id: str, ref: str) -> XoObject | None:
        obj_id = self._by_ref.get((pool_id, ref))
        return None if obj_id is None else self._objects.get(obj_id)

    def id_of_ref(self, pool_id: str, ref: str) -> str | None:
        return self._by_ref.get((pool_id, ref))

    def claim_of(self, obj_id: str, pool_id: str) -> XoObject | None:
        """The object `pool_id` holds under `obj_id`: published, or waiting for the id."""
        obj = self._objects.get(obj_id)
        if obj is not None and obj.get("$pool") == pool_id:
            return obj
        return self._claims.get(obj_id, {}).get(pool_id)

    # -- writes --------------------------------------------------------------------------

    def set(self, obj: XoObject) -> None:
        """Insert or replace an object (full object, not a diff). An object of another pool
        than the one that published the id waits as that pool's claim (see above)."""
        obj_id = obj["id"]
        old = self._objects.get(obj_id)
        pool = obj.get("$pool")
        if old is not None and pool and old.get("$pool") and old.get("$pool") != pool:
            self._claims.setdefault(obj_id, {})[pool] = obj
            return
        if old is not None:
            self._unindex(old)
        elif obj_id not in self._pending.exit:
            self._pending_new.add(obj_id)
        self._objects[obj_id] = obj
        self._by_type.setdefault(obj["type"], {})[obj_id] = obj
        ref = obj.get("_xapiRef")
        pool = obj.get("$pool")
        if ref and pool:
            self._by_ref[(pool, ref)] = obj_id
        self._pending.exit.discard(obj_id)
        self._pending.enter[obj_id] = obj
        self._schedule_flush()

    def withdraw(self, obj_id: str, pool_id: str) -> None:
        """`pool_id` no longer has `obj_id`: remove it if that pool published it (another
        pool's claim is published instead), else forget that pool's claim."""
        obj = self._objects.get(obj_id)
        if obj is not None and obj.get("$pool") == pool_id:
            self.remove(obj_id)
            return
        claims = self._claims.get(obj_id)
        if claims is not None:
            claims.pop(pool_id, None)
            if not claims:
                del self._claims[obj_id]

    def remove(self, obj_id: str) -> None:
        claims = self._claims.pop(obj_id, None)
        if claims:
            # Another pool has this id too (a VM that crossed pools): it takes the id over.
            self._remove(obj_id)
            pool, successor = next(iter(claims.items()))
            del claims[pool]
            self.set(successor)
            if claims:
                self._claims[obj_id] = claims
            return
        self._remove(obj_id)

    def _remove(self, obj_id: str) -> None:
        old = self._objects.pop(obj_id, None)
        if old is None:
            return
        self._unindex(old)
        self._pending.enter.pop(obj_id, None)
        if obj_id in self._pending_new:
            self._pending_new.discard(obj_id)
        else:
            self._pending.exit.add(obj_id)
        self._schedule_flush()

    def _unindex(self, obj: XoObject) -> None:
        by_type = self._by_type.get(obj["type"])
        if by_type is not None:
            by_type.pop(obj["id"], None)
        ref = obj.get("_xapiRef")
        pool = obj.get("$pool")
        if ref and pool and self._by_ref.get((pool, ref)) == obj["id"]:
            del self._by_ref[(pool, ref)]

    # -- change notification -------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Register a callback for every flushed change set; returns an unsubscribe."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop (synchronous use in a script): deliver at the next explicit flush().
            return
        self._flush_scheduled = True
        wait = self._last_flush + self.min_flush_interval - loop.time()
        if wait > 0:
            loop.call_later(wait, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        with contextlib.suppress(RuntimeError):
            self._last_flush = asyncio.get_running_loop().time()
        changes, self._pending = self._pending, ChangeSet()
        self._pending_new = set()
        if not changes:
            return
        for subscriber in list(self._subscribers):
            try:
                subscriber(changes)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("event=store_subscriber_failed")
