"""`all` notifications: every change of the object store, pushed to every signed-in connection.

The hub subscribes to `xen.store.ObjectStore`. Each flush (one `ChangeSet`) is serialized ONCE
with orjson into at most two frames, xo-server's `{type: "enter", items: {id: object}}` then
`{type: "exit", items: {id: 0}}`, and the same bytes are queued on every signed-in connection.

Each connection has an `Outbox` drained by its own writer task, so a slow reader only delays
itself. The outbox is bounded: while it holds fewer than `max_frames` shared frames it just
queues them; past that it switches to coalescing, merging further changes by object id (last
write wins, an exit cancels a pending enter and vice versa) and serializing the merged set for
that connection alone once the writer catches up. If the merged set grows past `max_objects`
the connection is disconnected (the client can reconnect and refetch with xo.getAllObjects).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from xen.store import ChangeSet, ObjectStore

if TYPE_CHECKING:
    from server.connection import Connection

log = logging.getLogger("xo_migrate.push")


def encode_changes(enter: dict[str, Any], exit_ids: set[str] | list[str]) -> list[bytes]:
    frames = []
    if enter:
        frames.append(
            orjson.dumps(
                {"jsonrpc": "2.0", "method": "all", "params": {"type": "enter", "items": enter}}
            )
        )
    if exit_ids:
        items = dict.fromkeys(exit_ids, 0)
        frames.append(
            orjson.dumps(
                {"jsonrpc": "2.0", "method": "all", "params": {"type": "exit", "items": items}}
            )
        )
    return frames


class Outbox:
    """Pending notifications of one connection (see the module docstring)."""

    __slots__ = ("_enter", "_exit", "_frames", "_wakeup", "max_frames", "max_objects", "overflowed")

    def __init__(self, max_frames: int, max_objects: int) -> None:
        self.max_frames = max_frames
        self.max_objects = max_objects
        self._frames: deque[bytes] = deque()
        self._enter: dict[str, Any] = {}
        self._exit: set[str] = set()
        self._wakeup = asyncio.Event()
        self.overflowed = False

    def offer(self, frames: list[bytes], changes: ChangeSet) -> bool:
        """Queue one flush; False once the connection is too far behind to keep."""
        if self.overflowed:
            return False
        if not self._enter and not self._exit and len(self._frames) < self.max_frames:
            self._frames.extend(frames)
        else:
            enter, exits = self._enter, self._exit
            for obj_id, obj in changes.enter.items():
                exits.discard(obj_id)
                enter[obj_id] = obj
            for obj_id in changes.exit:
                enter.pop(obj_id, None)
                exits.add(obj_id)
            if len(enter) + len(exits) > self.max_objects:
                self.overflowed = True
                self.clear()
        self._wakeup.set()
        return not self.overflowed

    def clear(self) -> None:
        self._frames.clear()
        self._enter = {}
        self._exit = set()

    def backlog(self) -> int:
        return len(self._frames) + len(self._enter) + len(self._exit)

    async def run(
        self, send: Callable[[bytes], Awaitable[None]], kick: Callable[[], Awaitable[None]]
    ) -> None:
        """Writer loop, owned by the connection (cancelled when it closes)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                if self.overflowed:
                    await kick()
                    return
                if self._frames:
                    await send(self._frames.popleft())
                elif self._enter or self._exit:
                    enter, exits = self._enter, self._exit
                    self._enter, self._exit = {}, set()
                    for frame in encode_changes(enter, exits):
                        await send(frame)
                else:
                    break


class PushHub:
    def __init__(self, store: ObjectStore, *, max_frames: int, max_objects: int) -> None:
        self.max_frames = max_frames
        self.max_objects = max_objects
        self._members: dict[Connection, Outbox] = {}
        self.dropped = 0  # connections disconnected for falling too far behind (metrics)
        self._unsubscribe = store.subscribe(self._on_changes)

    def __len__(self) -> int:
        return len(self._members)

    def add(self, conn: Connection, outbox: Outbox) -> None:
        self._members[conn] = outbox

    def discard(self, conn: Connection) -> None:
        self._members.pop(conn, None)

    def close(self) -> None:
        self._unsubscribe()
        self._members.clear()

    def _on_changes(self, changes: ChangeSet) -> None:
        if not self._members:
            return  # nobody listens: skip serialization altogether
        frames = encode_changes(changes.enter, changes.exit)
        dropped = []
        for conn, outbox in self._members.items():
            if not outbox.offer(frames, changes):
                dropped.append(conn)
        self.dropped += len(dropped)
        for conn in dropped:
            log.warning("event=push_overflow remote=%s limit=%d", conn.remote, self.max_objects)
            self.discard(conn)
