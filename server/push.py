"""`all` notifications: every change of the object store, pushed to the signed-in connections
that may see it.

The hub subscribes to `xen.store.ObjectStore`. Admins see everything: each flush (one
`ChangeSet`) is serialized ONCE with orjson into at most two frames, xo-server's `{type:
"enter", items: {id: object}}` then `{type: "exit", items: {id: 0}}`, and the same bytes are
queued on every admin connection. A non-admin gets only what it may view (server/views.py):
connections are grouped per user, each group gets its own enter/exit ids (objects that moved
into or out of its view included), each object is serialized at most once per flush whatever
the number of groups, and groups with the same ids share the same frames. When a user's rights
change (ACL entries, groups, its permission), its connections get the objects that entered
its view and an `exit` for those that left it.

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

from server.views import Deltas, ViewGroup, Views
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
        frames.append(_exit_frame(exit_ids))
    return frames


def _exit_frame(exit_ids: set[str] | list[str]) -> bytes:
    items = dict.fromkeys(exit_ids, 0)
    return orjson.dumps(
        {"jsonrpc": "2.0", "method": "all", "params": {"type": "exit", "items": items}}
    )


_ENTER_HEAD = b'{"jsonrpc":"2.0","method":"all","params":{"type":"enter","items":{'
_ENTER_TAIL = b"}}}"


class _PieceCache:
    """One flush's objects, each serialized once as `"<id>":<object>` for every group."""

    __slots__ = ("_get", "_pieces")

    def __init__(self, store: ObjectStore) -> None:
        self._get = store.get
        self._pieces: dict[str, bytes] = {}

    def frames(self, enter_ids: list[str], exit_ids: list[str]) -> list[bytes]:
        frames = []
        if enter_ids:
            pieces = self._pieces
            parts = []
            for obj_id in enter_ids:
                piece = pieces.get(obj_id)
                if piece is None:
                    piece = pieces[obj_id] = (
                        orjson.dumps(obj_id) + b":" + orjson.dumps(self._get(obj_id))
                    )
                parts.append(piece)
            frames.append(_ENTER_HEAD + b",".join(parts) + _ENTER_TAIL)
        if exit_ids:
            frames.append(_exit_frame(exit_ids))
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
    def __init__(
        self, store: ObjectStore, views: Views, *, max_frames: int, max_objects: int
    ) -> None:
        self.max_frames = max_frames
        self.max_objects = max_objects
        self._store = store
        self._views = views
        self._admins: dict[Connection, Outbox] = {}
        self._groups: dict[Connection, ViewGroup] = {}  # non-admin member -> its user's group
        self.dropped = 0  # connections disconnected for falling too far behind (metrics)
        self._unsubscribe = store.subscribe(self._on_changes)
        self._unsubscribe_acl = views.acl.subscribe(self._on_rights_changed)

    def __len__(self) -> int:
        return len(self._admins) + len(self._groups)

    def add(self, conn: Connection, outbox: Outbox) -> None:
        """A connection signed in: it gets what its user may see from the next flush on."""
        self.discard(conn)
        user = conn.user
        if user is None:
            return
        if user.is_admin:
            self._admins[conn] = outbox
        else:
            group = self._views.group_for(user.id)
            group.members[conn] = outbox
            self._groups[conn] = group

    def discard(self, conn: Connection) -> None:
        self._admins.pop(conn, None)
        group = self._groups.pop(conn, None)
        if group is not None:
            group.members.pop(conn, None)
            if not group.members:
                self._views.drop(group)

    def regroup(self, conn: Connection) -> None:
        """The connection's user changed (its permission): it moves to what it may see now,
        with the objects that entered its view and an `exit` for those that left it."""
        outbox = self._admins.get(conn)
        group = self._groups.get(conn)
        if outbox is None and group is not None:
            outbox = group.members.get(conn)
        user = conn.user
        if outbox is None or user is None:
            return
        if (group is None) == user.is_admin and (group is None or group.user_id == user.id):
            return  # same place
        before = self._seen(conn)
        self.add(conn, outbox)
        after = self._seen(conn)
        enter = [i for i in after if i not in before]
        gone = [i for i in before if i not in after]
        frames = _PieceCache(self._store).frames(enter, gone)
        if frames:
            get = self._store.get
            subset = ChangeSet({i: o for i in enter if (o := get(i)) is not None}, set(gone))
            self._offer({conn: outbox}, frames, subset)

    def _seen(self, conn: Connection) -> set[str]:
        group = self._groups.get(conn)
        return set(self._store.all()) if group is None else set(group.visible)

    def close(self) -> None:
        self._unsubscribe()
        self._unsubscribe_acl()
        self._admins.clear()
        self._groups.clear()

    def _on_changes(self, changes: ChangeSet) -> None:
        if self._admins:
            self._offer(self._admins, encode_changes(changes.enter, changes.exit), changes)
        # Always: the view index (once there is one) follows every flush.
        deltas = self._views.apply(changes)
        if deltas:
            self._send(deltas)

    def _on_rights_changed(self, user_ids: set[str]) -> None:
        deltas = self._views.refresh(user_ids)
        if deltas:
            self._send(deltas)

    def _send(self, deltas: Deltas) -> None:
        pieces = _PieceCache(self._store)
        get = self._store.get
        shared: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[list[bytes], ChangeSet]] = {}
        for group, delta in deltas.items():
            if not group.members:
                continue
            key = (tuple(delta.enter), tuple(delta.exit))
            found = shared.get(key)
            if found is None:
                subset = ChangeSet({i: o for i in delta.enter if (o := get(i)) is not None})
                subset.exit.update(delta.exit)
                found = shared[key] = (pieces.frames(delta.enter, delta.exit), subset)
            self._offer(group.members, *found)

    def _offer(
        self, members: dict[Connection, Outbox], frames: list[bytes], changes: ChangeSet
    ) -> None:
        dropped = []
        for conn, outbox in members.items():
            if not outbox.offer(frames, changes):
                dropped.append(conn)
        self.dropped += len(dropped)
        for conn in dropped:
            log.warning("event=push_overflow remote=%s limit=%d", conn.remote, self.max_objects)
            self.discard(conn)
