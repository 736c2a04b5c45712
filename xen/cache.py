"""One pool's share of the ObjectStore, fed by `event.from` batches (xapi.md 4.2).

Objects are converted by xen/xo_shape.py's tables. The cache keeps, per pool, only what
conversion needs beyond the published objects: ref -> id and class maps; records of the
classes that are read but not published (xo_shape.READ_ONLY: host_metrics ...) and of hosts
(RAW_KEPT); slim side records (xo_shape.SIDES: a VM's metrics and guest metrics) with, for each
owner, the few record fields its side fields read (`inputs`); and the raw record of any object
whose conversion is incomplete (a link to a ref not seen yet) or depends on another object (an
SR's `$container` reads its PBD), so that it can be converted again when the missing or
depended-on object arrives or changes (and the objects that read it, in turn, when that
changes it). When a side record changes, only its owner's side fields are computed again, from
the kept inputs: a VM's whole XAPI record is never kept for that. Everything else lives in the
store only.

A full batch (the answer to `event.from` with token "") replaces the pool's contents: refs
not in it are removed, unchanged objects are not re-announced. Incremental batches apply
add/mod/del per object. Deletions only remove store objects this pool published (a VM that
moved to another pool keeps its uuid and may already have been re-published by that pool).

Task watchers (for `call_async`) are resolved here, from the same events, so waiting for a
task costs no XAPI call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from xen.store import ObjectStore, XoObject
from xen.wire import NULL_REF
from xen.xo_shape import (
    RAW_KEPT,
    READ_ONLY,
    SHAPES,
    SIDES,
    Record,
    canonical_class,
    refold,
    side_inputs,
    slim_side,
    to_xo,
)

log = logging.getLogger("xo_migrate.xen.cache")

TERMINAL_TASK_STATUSES = frozenset({"success", "failure", "cancelled"})

# Longest run of work on one batch between two yields to the event loop: a 10,000-VM
# snapshot is seconds of conversions, and no client may wait that long for an answer. Timed
# rather than counted: a conversion's cost varies by class and by machine.
SLICE_S = 0.01
# Rounds of converting again the readers of objects that a conversion again changed (a VM
# reads its VBDs' VDIs' SRs, an SR reads its PBD): deeper chains than this do not exist.
_ROUNDS = 4


class _Slices:
    """Cuts a batch's work into slices of at most SLICE_S, with a yield between two."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = time.perf_counter() + SLICE_S

    def over(self) -> bool:
        return time.perf_counter() >= self._until

    async def pause(self) -> None:
        await asyncio.sleep(0)
        self._until = time.perf_counter() + SLICE_S


@dataclass(eq=False, slots=True)
class TaskWatch:
    """Resolved with the task's final XO object, or None when the task vanished unseen
    (deleted, or never seen by a poll that started after the watch was registered)."""

    ref: str
    registered_at_poll: int
    future: asyncio.Future[XoObject | None] = field(repr=False)
    seen: bool = False


@dataclass(slots=True)
class _Fold:
    """What computing an owner's side fields again needs: its class, the few record fields
    they read, and the refs of its side records by link field."""

    cls: str
    inputs: dict[str, Any]
    links: dict[str, str]


class _Conversion:
    """The Linker handed to `to_xo` for one object: records misses and reads."""

    __slots__ = ("_cache", "missing", "pool_id", "reads")

    def __init__(self, cache: PoolCache) -> None:
        self._cache = cache
        self.pool_id = cache.pool_id or ""
        self.missing: list[str] = []
        self.reads: list[str] = []

    def id_of(self, ref: str, target: str | None = None) -> str | None:
        if ref == NULL_REF or not ref:
            return None
        obj_id = self._cache._ids.get(ref)
        if obj_id is None and (target is None or self._cache.follows(target)):
            # Worth converting again when it arrives; refs to classes the stream does not
            # carry (VM_metrics, consoles ...) never will.
            self.missing.append(ref)
        return obj_id

    def ids_of(self, refs: list[str], target: str | None = None) -> list[str]:
        # One call per ref set, not per ref: the sets of 10,000 objects are most of a sync.
        ids = self._cache._ids
        out = []
        for ref in refs:
            obj_id = ids.get(ref)
            if obj_id is not None:
                out.append(obj_id)
            elif ref != NULL_REF and ref and (target is None or self._cache.follows(target)):
                self.missing.append(ref)
        return out

    def read(self, ref: str) -> Record | None:
        if ref == NULL_REF or not ref:
            return None
        self.reads.append(ref)
        kept = self._cache._records.get(ref)
        if kept is not None:
            return kept
        return self._cache.published(ref)

    def read_linked(self, obj_id: str | None) -> XoObject | None:
        if not obj_id:
            return None
        # Not converted yet: only within a batch that also brings the object linking it
        # (read before, and known by id), whose readers are converted again after it.
        obj = self._cache.store.claim_of(obj_id, self.pool_id)
        if obj is None:
            return None
        self.reads.append(obj["_xapiRef"])
        return obj


class PoolCache:
    def __init__(
        self, store: ObjectStore, label: str = "", classes: tuple[str, ...] = ("*",)
    ) -> None:
        self.store = store
        self.label = label
        self._followed = None if "*" in classes else {c.lower() for c in classes}
        self.pool_id: str | None = None
        self.synced = False  # a full batch has been applied
        self.polls_started = 0  # event.from calls started (by the connection)
        self._ids: dict[str, str] = {}  # ref -> XO id (every known object)
        self._classes: dict[str, str] = {}  # ref -> XAPI class name
        # Records kept for reading: READ_ONLY and RAW_KEPT classes raw, SIDES slim.
        self._records: dict[str, Record] = {}
        self._raw: dict[str, tuple[str, dict[str, Any]]] = {}  # to convert again later
        self._waiting: dict[str, set[str]] = {}  # missing ref -> refs wanting it
        self._readers: dict[str, set[str]] = {}  # ref -> refs whose conversion read it
        self._folds: dict[str, _Fold] = {}  # owner ref -> what its side fields need
        self._folded_into: dict[str, str] = {}  # side ref -> owner ref
        self._early: list[dict[str, Any]] = []  # events before the pool record was seen
        self._watches: dict[str, list[TaskWatch]] = {}

    # -- reads -------------------------------------------------------------------------

    def follows(self, cls: str) -> bool:
        """Whether the event stream carries objects of class `cls`."""
        return self._followed is None or cls.lower() in self._followed

    def published(self, ref: str) -> XoObject | None:
        """The store object this pool published for `ref`, if any."""
        obj_id = self._ids.get(ref)
        if obj_id is None:
            return None
        obj = self.store.claim_of(obj_id, self.pool_id or "")
        if obj is None or obj.get("_xapiRef") != ref:
            return None
        return obj

    def refs_of_class(self, cls: str) -> list[str]:
        return [ref for ref, c in self._classes.items() if c == cls]

    def host_addresses(self) -> list[str]:
        """Management addresses of the pool's hosts, master first (for failover probing)."""
        master = None
        pool = next(
            (self.published(r) for r in self.refs_of_class("pool")),
            None,
        )
        if pool:
            master = pool.get("master")
        out: list[str] = []
        for ref in self.refs_of_class("host"):
            host = self.published(ref)
            if host and host.get("address"):
                if host["id"] == master:
                    out.insert(0, host["address"])
                else:
                    out.append(host["address"])
        return out

    def convert_detached(self, cls: str, ref: str, record: dict[str, Any]) -> XoObject:
        """Convert a record fetched outside the event stream, without caching it."""
        obj = to_xo(canonical_class(cls), ref, record, _Conversion(self))
        if obj is None:
            raise ValueError(f"objects of class {cls} are not published")
        return obj

    def __len__(self) -> int:
        return len(self._ids)

    # -- event batches -----------------------------------------------------------------

    async def apply(self, events: list[dict[str, Any]], *, full: bool, poll: int) -> None:
        """Apply one `event.from` batch; `full` for the answer to token "" (a snapshot)."""
        if self.pool_id is None or full:
            pool_event = next(
                (e for e in events if e.get("class", "").lower() == "pool" and e.get("snapshot")),
                None,
            )
            if pool_event is not None:
                pool_id = pool_event["snapshot"].get("uuid") or pool_event["ref"]
                if self.pool_id is not None and pool_id != self.pool_id:
                    log.warning(
                        "event=pool_identity_changed pool=%s old=%s new=%s",
                        self.label,
                        self.pool_id,
                        pool_id,
                    )
                    self.clear()
                self.pool_id = pool_id
        if self.pool_id is None:
            # Cannot publish without `$pool`: keep until the pool record shows up.
            self._early.extend(events)
            self._resolve_watches(poll, set())
            return
        if self._early:
            events = self._early + events
            self._early = []

        slices = _Slices()
        upserts: list[tuple[str, str, dict[str, Any]]] = []
        deletes: list[str] = []
        for event in events:
            if slices.over():
                await slices.pause()
            ref = event.get("ref", "")
            op = event.get("operation")
            if op == "del":
                deletes.append(ref)
            elif op in ("add", "mod") and isinstance(event.get("snapshot"), dict):
                upserts.append((canonical_class(event.get("class", "")), ref, event["snapshot"]))

        if full:
            alive = {ref for _, ref, _ in upserts}
            deletes = [ref for ref in self._ids if ref not in alive]
        touched: set[str] = set()
        # Deletions first: a full batch may bring an object back under a new ref.
        for ref in deletes:
            self._forget(ref)
            touched.add(ref)
            if slices.over():
                await slices.pause()

        new_refs: list[str] = []
        for cls, ref, record in upserts:
            if slices.over():
                await slices.pause()
            if ref not in self._ids:
                new_refs.append(ref)
            self._ids[ref] = record.get("uuid") or ref
            self._classes[ref] = cls
        # Records read by conversions first, so that objects of this batch see them.
        converted: list[tuple[str, str, dict[str, Any]]] = []
        for cls, ref, record in upserts:
            if slices.over():
                await slices.pause()
            touched.add(ref)
            if cls in SIDES:
                self._records[ref] = slim_side(cls, record)
            elif cls in READ_ONLY or cls in RAW_KEPT:
                self._records[ref] = record
            if cls not in SIDES and cls not in READ_ONLY:
                converted.append((cls, ref, record))
        for cls, ref, record in converted:
            self._convert(cls, ref, record)
            if slices.over():
                await slices.pause()

        # Objects waiting for a ref that just appeared, and readers of changed objects.
        again: set[str] = set()
        for ref in new_refs:
            again |= self._waiting.pop(ref, set())
            if slices.over():
                await slices.pause()
        for ref in touched:
            again |= self._readers.get(ref, set())
            if slices.over():
                await slices.pause()
        for _ in range(_ROUNDS):
            changed: set[str] = set()
            for ref in again:
                kept = self._raw.get(ref)
                if kept is not None and self._convert(kept[0], ref, kept[1]):
                    changed.add(ref)
                if slices.over():
                    await slices.pause()
            again = set()
            for ref in changed:
                again |= self._readers.get(ref, set())
            if not again:
                break
        owners = {ref for _, ref, _ in converted}
        for cls, ref, _ in upserts:
            if slices.over():
                await slices.pause()
            if cls in SIDES and self._folded_into.get(ref) not in owners:
                self._fold_again(ref)

        if full:
            self.synced = True
        if full or len(self._waiting) + len(self._readers) > 4 * len(self._raw) + 1000:
            self._prune_dependencies()
        self._resolve_watches(poll, touched)

    def _convert(self, cls: str, ref: str, record: dict[str, Any]) -> bool:
        """Convert and publish; whether the published object changed."""
        conversion = _Conversion(self)
        sides = self._sides_of(cls, ref, record)
        obj = to_xo(cls, ref, record, conversion, sides)
        if obj is None:
            return False
        if conversion.missing or conversion.reads:
            self._raw[ref] = (cls, record)
            for missing in conversion.missing:
                self._waiting.setdefault(missing, set()).add(ref)
            for read in conversion.reads:
                self._readers.setdefault(read, set()).add(ref)
        else:
            self._raw.pop(ref, None)
        current = self.store.claim_of(obj["id"], self.pool_id or "")
        if current == obj:
            return False
        self.store.set(obj)
        return True

    def _sides_of(self, cls: str, ref: str, record: dict[str, Any]) -> dict[str, Record | None]:
        """The side records of an owner, remembering what refolding it needs later."""
        shape = SHAPES.get(cls)
        if shape is None or not shape.sides:
            return {}
        links = {link: record.get(link, NULL_REF) for link in shape.sides}
        previous = self._folds.get(ref)
        if previous is not None:
            for side_ref in previous.links.values():
                if self._folded_into.get(side_ref) == ref:
                    del self._folded_into[side_ref]
        self._folds[ref] = _Fold(cls, side_inputs(cls, record) or {}, links)
        for side_ref in links.values():
            if side_ref != NULL_REF:
                self._folded_into[side_ref] = ref
        return {link: self._records.get(side_ref) for link, side_ref in links.items()}

    def _fold_again(self, side_ref: str) -> None:
        """A side record arrived or changed: compute its owner's side fields again. (When
        one goes, XAPI unlinks it too: its owner is converted again.)"""
        owner_ref = self._folded_into.get(side_ref, "")
        fold = self._folds.get(owner_ref)
        owner = self.published(owner_ref)
        if fold is None or owner is None or side_ref not in fold.links.values():
            return
        sides = {link: self._records.get(ref) for link, ref in fold.links.items()}
        obj = refold(fold.cls, owner_ref, owner, fold.inputs, _Conversion(self), sides)
        if obj != owner:
            self.store.set(obj)

    def _prune_dependencies(self) -> None:
        """Drop dependency entries of objects that no longer wait for anything (they are
        left behind when an object is converted again), so they cannot pile up."""
        for index in (self._waiting, self._readers):
            for ref in list(index):
                live = {d for d in index[ref] if d in self._raw}
                if live:
                    index[ref] = live
                else:
                    del index[ref]

    def _forget(self, ref: str) -> None:
        obj = self.published(ref)
        if obj is not None:
            self.store.withdraw(obj["id"], self.pool_id or "")
        self._ids.pop(ref, None)
        self._classes.pop(ref, None)
        self._records.pop(ref, None)
        self._raw.pop(ref, None)
        self._waiting.pop(ref, None)
        self._folded_into.pop(ref, None)
        self._folds.pop(ref, None)

    def clear(self) -> None:
        """Withdraw every object of this pool from the store (disconnect / removal)."""
        for ref in list(self._ids):
            self._forget(ref)
        self._readers.clear()
        self._waiting.clear()
        self._folded_into.clear()
        self._folds.clear()
        self._early.clear()
        self.synced = False

    # -- task watching -----------------------------------------------------------------

    def watch_task(self, ref: str) -> TaskWatch:
        watch = TaskWatch(ref, self.polls_started, asyncio.get_running_loop().create_future())
        self._watches.setdefault(ref, []).append(watch)
        task = self.published(ref)
        if task is not None:
            watch.seen = True
            if task.get("status") in TERMINAL_TASK_STATUSES:
                self._settle(watch, task)
        return watch

    def unwatch(self, watch: TaskWatch) -> None:
        watches = self._watches.get(watch.ref)
        if watches and watch in watches:
            watches.remove(watch)
            if not watches:
                del self._watches[watch.ref]

    def fail_watches(self, exc: BaseException) -> None:
        for watches in list(self._watches.values()):
            for watch in watches:
                if not watch.future.done():
                    watch.future.set_exception(exc)

    def _resolve_watches(self, poll: int, touched: set[str]) -> None:
        for ref, watches in list(self._watches.items()):
            task = self.published(ref)
            for watch in list(watches):
                if watch.future.done():
                    continue
                if task is not None:
                    watch.seen = True
                    if task.get("status") in TERMINAL_TASK_STATUSES:
                        self._settle(watch, task)
                elif watch.seen and ref in touched:
                    self._settle(watch, None)  # deleted before we saw it finish
                elif poll > watch.registered_at_poll:
                    self._settle(watch, None)  # a later poll would have shown it

    @staticmethod
    def _settle(watch: TaskWatch, task: XoObject | None) -> None:
        if not watch.future.done():
            watch.future.set_result(task)
