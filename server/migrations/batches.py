"""The server-owned batch service: many VM moves at once (a host evacuation, a pool-to-pool
move, any list of moves), planned as a whole and run through the migration service.

A batch is planned before anything moves (server/migrations/placement.py, with XAPI's
verdicts from server/migrations/verdicts.py): every VM gets a target host, SRs and networks
with the reasons, or a refusal with the reasons. Then each placed move becomes an ordinary
migration of the migration service (server/migrations/service.py), tagged with the batch id:
it waits in the service's fair queue within the per-pool and per-host limits (XenMotion too),
is held there while the batch is paused, and is cancelled through the service. The batch
follows its moves through the `migration` objects the service publishes, and is itself an
object of type `migrationBatch` in the live collection, pushed through `all`.

Batches are kept in the store (server/storage/: SQLite or Redis). One running or paused when
the server stopped is resumed at start: its moves' migrations are recovered by the migration
service (adopted, or queued again under a new id that the batch follows), and a move that
never reached the service is handed to it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from server import errors
from server.errors import RpcError, XoError
from server.migrations.batch import Batch, BatchMove
from server.migrations.connections import PoolConnections
from server.migrations.model import TERMINAL, Migration
from server.migrations.placement import MoveAsk, Placement
from server.migrations.plan import resident_host
from server.migrations.service import MigrationService
from server.migrations.settings import MigrationSettings
from server.migrations.verdicts import VerdictCollector
from server.storage import Storage
from server.storage.writer import WriteBehind
from xen.store import ChangeSet, ObjectStore

log = logging.getLogger("xo_migrate.migrations")

T = TypeVar("T")
PRUNE_EVERY = 20  # finished batches between two history prunes
KEEP_FINISHED = 100  # finished batches kept in the database (one can weigh 100s of KiB)
CHUNK = 16  # VMs planned, or moves started, between two yields to the event loop
FLUSH_INTERVAL_S = 0.25  # a batch's object is pushed (and saved) at most this often


class BatchRefused(Exception):
    """An all-or-nothing batch (maintenance) has VMs that cannot go: nothing was started."""

    def __init__(self, view: dict[str, Any]) -> None:
        self.view = view
        refused = [m for m in view["moves"] if m["status"] == "refused"]
        self.refusal: dict[str, Any] = refused[0]["refusal"] if refused else {}
        super().__init__(self.refusal.get("message", "refused"))


class BatchService:
    def __init__(
        self,
        store: ObjectStore,
        migrations: MigrationService,
        storage: Storage,
        connections: PoolConnections,
        settings: MigrationSettings | None = None,
    ) -> None:
        self._store = store
        self._migrations = migrations
        self._storage = storage
        self._writer: WriteBehind[Batch] = WriteBehind("batches", self._write)
        self._connections = connections
        self._settings = settings or MigrationSettings()
        self._batches: dict[str, Batch] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._planning = asyncio.Lock()  # one plan at a time: each sees the others' holds
        self._to_publish: set[str] = set()
        self._to_save: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")
        self._finished_since_prune = 0
        self._closing = False
        self._stopped = False
        self._unsubscribe = store.subscribe(self._on_changes)
        migrations.finish_listeners.append(self._on_finish)
        # Called once per batch when it ends, resumed batches included (host maintenance
        # enables its host again after a failure that no caller is waiting for).
        self.finish_listeners: list[Callable[[Batch], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def recover(self) -> None:
        """Resume the batches that were running or paused when the server stopped."""
        for record in await self._storage.active_batches():
            batch = Batch.from_record(record)
            self._batches[batch.id] = batch
            if batch.paused:
                self._migrations.queue.pause(batch.id)
            self._store.set(batch.to_xo())
            log.info("batch=%s event=recovered status=%s", batch.id, batch.status)
            self.spawn(self._resume(batch), f"batch-resume-{batch.id}")

    async def aclose(self) -> None:
        """Stop following batches; their moves keep going and the batches are resumed at the
        next start (their records stay running or paused)."""
        self._closing = True
        self._unsubscribe()
        if self._on_finish in self._migrations.finish_listeners:
            self._migrations.finish_listeners.remove(self._on_finish)
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush()
        self._stopped = True
        await self._writer.aclose()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """A background task of the service's (cancelled and awaited by `aclose`)."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def owned(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        """Run `coro` as the service's own task and await it: a caller that goes away does
        not stop it (host maintenance outlives the request that asked for it)."""
        return await asyncio.shield(self.spawn(coro, name))

    # -- queries ---------------------------------------------------------------------------

    async def live(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            await self.get(batch_id)  # no such object, or finished and known
            raise errors.forbidden_operation("batch", "this batch is finished")
        return batch

    async def get(self, batch_id: str) -> dict[str, Any]:
        batch = self._batches.get(batch_id)
        if batch is not None:
            return batch.to_xo()
        record = await self._storage.batch(batch_id)
        if record is None:
            raise errors.no_such_object(batch_id, "migrationBatch")
        return Batch.from_record(record).to_xo()

    async def all(self, limit: int = 50) -> list[dict[str, Any]]:
        out = {b.id: b.to_xo() for b in self._batches.values()}
        for record in await self._storage.recent_batches(limit):
            if record["id"] not in out:
                out[record["id"]] = Batch.from_record(record).to_xo()
        return sorted(out.values(), key=lambda b: b["created"], reverse=True)[:limit]

    def evacuation_of(self, host_id: str) -> str | None:
        """The live batch evacuating the host, if any."""
        for batch in self._batches.values():
            if batch.active and batch.evacuated_host == host_id:
                return batch.id
        return None

    def evacuating(self) -> set[str]:
        """Hosts being evacuated by a live batch: no batch places a VM there."""
        return {host for b in self._batches.values() if b.active and (host := b.evacuated_host)}

    # -- planning and starting --------------------------------------------------------------

    def evacuation_asks(
        self, host_id: str, target_pool: str | None, targets: list[str] | None
    ) -> list[MoveAsk]:
        """A move for every VM running on the host (control domains excepted)."""
        vms = [
            vm
            for vm in self._store.by_type("VM")
            if resident_host(vm) == host_id and vm.get("power_state") == "Running"
        ]
        vms.sort(key=lambda vm: (str(vm.get("name_label", "")), vm["id"]))
        hosts = frozenset(targets) if targets else None
        return [MoveAsk(vm["id"], target_pool=target_pool, hosts=hosts) for vm in vms]

    async def create(
        self,
        kind: str,
        asks: list[MoveAsk],
        *,
        method: str,
        user_id: str | None,
        user_email: str | None,
        host: str | None = None,
        target_pool: str | None = None,
        stop_on_error: bool = False,
        dry_run: bool = False,
        require_all: bool = False,
    ) -> dict[str, Any]:
        """Plan the moves; unless `dry_run`, start the batch. The batch's object either way
        (a dry run's has no id and status `planned`). `require_all`: BatchRefused, and
        nothing starts, if a VM cannot go."""
        async with self._planning:
            started = time.perf_counter()
            avoid = self.evacuating() | ({host} if host and kind != "batch" else set())
            memory, space = self._holds()
            placement = Placement(
                self._store,
                busy={
                    a.vm: m.id
                    for a in asks
                    if (m := self._migrations.live_for_vm(a.vm)) is not None
                },
                avoid=avoid,
                reserved_memory=memory,
                reserved_space=space,
            )
            prepared = []
            for i in range(0, len(asks), CHUNK):  # hundreds of VMs: let the loop breathe
                prepared += placement.prepare(asks[i : i + CHUNK])
                await asyncio.sleep(0)
            collector = VerdictCollector(self._store, self._connections, self._settings.plan_checks)
            try:
                verdicts = await collector.collect(prepared)
            finally:
                await collector.aclose()
            outcomes = placement.place(prepared, verdicts)
            batch = Batch(
                kind,
                [BatchMove.from_outcome(o) for o in outcomes],
                method,
                user_id,
                user_email,
                stop_on_error=stop_on_error,
                host=host,
                target_pool=target_pool,
                planning_ms=(time.perf_counter() - started) * 1000,
            )
            refused = sum(1 for m in batch.moves if m.status == "refused")
            log.info(
                "batch=%s event=planned kind=%s moves=%d refused=%d planning_ms=%.1f dry_run=%s",
                batch.id,
                kind,
                len(batch.moves),
                refused,
                batch.planning_ms,
                dry_run,
            )
            if dry_run or (require_all and refused):
                view = batch.to_xo()
                view.update(id=None, status="planned")
                if dry_run:
                    return view
                raise BatchRefused(view)
            self._batches[batch.id] = batch
            for i, move in enumerate(batch.moves):
                if move.status != "planned":
                    continue  # refused, or cancelled while the batch was starting
                if batch.stopping or batch.cancel_requested:
                    move.status = "cancelled"
                else:
                    self._submit(batch, move)
                if i % CHUNK == CHUNK - 1:
                    await asyncio.sleep(0)
        self._touch(batch, save=True)
        self._check_done(batch)
        return batch.to_xo()

    def _holds(self) -> tuple[dict[str, int], dict[str, int]]:
        """Memory per host and space per SR held by the unfinished moves of live batches."""
        memory: dict[str, int] = {}
        space: dict[str, int] = {}
        for batch in self._batches.values():
            for move in batch.moves:
                if move.done or move.target_host is None:
                    continue
                memory[move.target_host] = memory.get(move.target_host, 0) + move.memory
                for sr, size in move.sr_bytes.items():
                    space[sr] = space.get(sr, 0) + size
        return memory, space

    def _submit(self, batch: Batch, move: BatchMove) -> None:
        assert move.request is not None
        move.request.batch = batch.id
        move.request_record = move.request.to_json()
        try:
            m = self._migrations.begin(
                move.request,
                method=batch.method,
                user_id=batch.user_id,
                user_email=batch.user_email,
            )
        except (XoError, RpcError) as exc:
            move.status = "failure"
            move.error = {"code": "START_FAILED", "params": [], "message": exc.message}
            log.warning("batch=%s event=move_not_started vm=%s error=%s", batch.id, move.vm, exc)
            return
        move.observe(m.to_xo())

    # -- control ---------------------------------------------------------------------------

    async def pause(self, batch_id: str) -> dict[str, Any]:
        batch = await self._active(batch_id, "pause")
        if not batch.paused:
            batch.paused = True
            batch.status = "paused"
            self._migrations.queue.pause(batch.id)
            log.info("batch=%s event=paused", batch.id)
            self._touch(batch, save=True)
        return batch.to_xo()

    async def resume(self, batch_id: str) -> dict[str, Any]:
        batch = await self._active(batch_id, "resume")
        if batch.paused:
            batch.paused = False
            batch.status = "running"
            self._migrations.queue.resume(batch.id)
            log.info("batch=%s event=resumed", batch.id)
            self._touch(batch, save=True)
        return batch.to_xo()

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        """Queued moves are dropped; running ones are cancelled where XAPI still allows it.
        The answer says, for every move that was not done, how its cancellation went."""
        batch = await self._active(batch_id, "cancel")
        batch.cancel_requested = True
        self._migrations.queue.pause(batch.id)  # nothing more starts meanwhile
        self._touch(batch, save=True)
        log.info("batch=%s event=cancel_requested", batch.id)
        moves = [m for m in batch.moves if not m.done]
        answers = await asyncio.gather(*(self._cancel_move(m) for m in moves))
        if not batch.paused:
            self._migrations.queue.resume(batch.id)
        self._check_done(batch)
        return {
            "id": batch.id,
            "status": batch.status,
            "cancelled": sum(1 for a in answers if a["cancelled"]),
            "moves": answers,
        }

    async def _cancel_move(self, move: BatchMove) -> dict[str, Any]:
        answer: dict[str, Any] = {"vm": move.vm, "migration": move.migration}
        if move.migration is None:
            move.status = "cancelled"
            return {**answer, "cancelled": True, "status": "cancelled"}
        try:
            result = await self._migrations.cancel(move.migration)
            move.observe(await self._migrations.get(move.migration))  # now, not at the next push
        except (XoError, RpcError) as exc:
            result = {"cancelled": False, "status": move.status, "reason": exc.message}
        return {**answer, **result}

    async def wait(self, batch_id: str) -> dict[str, Any]:
        batch = self._batches.get(batch_id)
        if batch is None:
            return await self.get(batch_id)
        await batch.done.wait()
        return batch.to_xo()

    async def _active(self, batch_id: str, operation: str) -> Batch:
        batch = await self.live(batch_id)
        if not batch.active:
            raise errors.forbidden_operation(operation, f"the batch is already {batch.status}")
        if batch.cancel_requested:
            raise errors.forbidden_operation(operation, "the batch is being cancelled")
        return batch

    # -- following the moves ----------------------------------------------------------------

    def _on_changes(self, changes: ChangeSet) -> None:
        if not self._batches:
            return
        for obj in changes.enter.values():
            if obj.get("type") != "migration":
                continue
            batch = self._batches.get(obj.get("batch") or "")
            if batch is None or not batch.active:
                continue
            move = batch.move_of(obj["vm"])
            if move is None or not _is_current(move, obj):
                continue
            self._observe(batch, move, obj)

    def _on_finish(self, m: Migration) -> None:
        """A move failed with stopOnError: hold the batch's line at once, before the slot it
        frees lets the next move start."""
        batch = self._batches.get(m.request.batch or "")
        if batch is None or not batch.active or not batch.stop_on_error:
            return
        move = batch.move_of(m.request.vm)
        if move is None or m.status not in ("failure", "interrupted"):
            return
        if self._restartable(batch, move, m.to_xo()):
            return  # run again, not a failure
        self._migrations.queue.pause(batch.id)
        self._stop(batch, move)

    def _observe(self, batch: Batch, move: BatchMove, record: dict[str, Any]) -> None:
        if self._restartable(batch, move, record):
            move.retried = True
            log.info("batch=%s event=move_restarted vm=%s", batch.id, move.vm)
            self._submit(batch, move)
            self._touch(batch, save=True)
            return
        before = move.status
        move.observe(record)
        changed = move.status != before
        self._touch(batch, save=changed)  # saved on a status change, not on progress
        if changed and move.status in ("failure", "interrupted") and batch.stop_on_error:
            self._stop(batch, move)
        if move.done:
            self._check_done(batch)

    def _restartable(self, batch: Batch, move: BatchMove, record: dict[str, Any]) -> bool:
        """A move a server restart interrupted while the VM had not left (XAPI had not
        started moving it): the batch runs it again, once."""
        error = record.get("error") or {}
        if (
            record.get("status") != "interrupted"
            or error.get("code") != "SERVER_RESTARTED"
            or move.retried
            or batch.cancel_requested
            or batch.stopping
        ):
            return False
        vm = self._store.get(move.vm)
        return vm is not None and vm.get("$container") == move.source_host

    def _stop(self, batch: Batch, failed: BatchMove) -> None:
        """stopOnError: the moves still queued are dropped; running ones finish."""
        if batch.stopping:
            return
        batch.stopping = True
        log.info("batch=%s event=stopping failed_vm=%s", batch.id, failed.vm)
        queued = [m for m in batch.moves if m.status in ("planned", "queued")]
        if queued:
            self.spawn(self._drop(batch, queued), f"batch-stop-{batch.id}")

    async def _drop(self, batch: Batch, moves: list[BatchMove]) -> None:
        await asyncio.gather(*(self._cancel_move(m) for m in moves))
        self._touch(batch, save=True)
        self._check_done(batch)

    def _check_done(self, batch: Batch) -> None:
        if not batch.active:
            return
        final = batch.settle_status()
        if final is None:
            return
        batch.status = final
        batch.finished = time.time()
        self._migrations.queue.resume(batch.id)
        self._finished_since_prune += 1
        self._touch(batch, save=True)
        batch.done.set()
        log.info(
            "batch=%s event=finished status=%s totals=%s",
            batch.id,
            final,
            ",".join(f"{k}={v}" for k, v in batch.totals().items() if v),
        )
        for listener in self.finish_listeners:
            listener(batch)
        if not self._closing:
            self.spawn(self._forget_later(batch), f"batch-forget-{batch.id}")

    async def _forget_later(self, batch: Batch) -> None:
        await asyncio.sleep(self._settings.finished_visible_s)
        self._batches.pop(batch.id, None)
        self._store.remove(batch.id)

    # -- after a restart --------------------------------------------------------------------

    async def _resume(self, batch: Batch) -> None:
        """Once the migration service has recovered its migrations, find each unfinished
        move's migration again; hand the service the moves that never reached it."""
        await self._migrations.recovered()
        for move in batch.moves:
            if move.done:
                continue
            live = self._migrations.live_for_vm(move.vm)
            if live is not None and live.request.batch == batch.id:
                move.observe(live.to_xo())
                continue
            record = await self._latest_record(move)
            if record is not None and record["status"] in TERMINAL:
                self._observe(batch, move, record)
                continue
            vm = self._store.get(move.vm)
            if vm is not None and move.target_host and vm.get("$container") == move.target_host:
                move.status = "success"
            elif batch.cancel_requested or batch.stopping:
                move.status = "cancelled"
            elif move.request is not None:
                log.info("batch=%s event=move_resubmitted vm=%s", batch.id, move.vm)
                self._submit(batch, move)
        self._touch(batch, save=True)
        self._check_done(batch)

    async def _latest_record(self, move: BatchMove) -> dict[str, Any] | None:
        """The move's migration record, following a re-queue after a restart."""
        migration_id, seen = move.migration, set()
        while migration_id and migration_id not in seen:
            seen.add(migration_id)
            try:
                record = await self._migrations.get(migration_id)
            except (XoError, RpcError):
                return None
            error = record.get("error") or {}
            if (
                record["status"] == "interrupted"
                and error.get("code") == "SERVER_RESTARTED"
                and error.get("params")
            ):
                migration_id = error["params"][0]  # re-queued as this migration
                continue
            return record
        return None

    # -- publishing ------------------------------------------------------------------------

    def _touch(self, batch: Batch, *, save: bool = False) -> None:
        """Publish the batch (and save it, on a status change) at most every
        FLUSH_INTERVAL_S, however many of its moves changed meanwhile: a batch of hundreds
        of moves is one object, rebuilt and pushed a few times a second, not at every move's
        progress. (Its moves' own records are saved as they change: recovery reads those.)"""
        if self._stopped:
            return
        self._to_publish.add(batch.id)
        if save:
            self._to_save.add(batch.id)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            wait = max(0.0, self._last_flush + FLUSH_INTERVAL_S - loop.time())
            self._flush_handle = loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        with contextlib.suppress(RuntimeError):  # no running loop: the final flush
            self._last_flush = asyncio.get_running_loop().time()
        publish, self._to_publish = self._to_publish, set()
        save, self._to_save = self._to_save, set()
        for batch_id in publish:
            batch = self._batches.get(batch_id)
            if batch is not None:
                self._store.set(batch.to_xo())
        if self._stopped:
            return  # the history closes after us: late callbacks must not write
        for batch_id in save:
            batch = self._batches.get(batch_id)
            if batch is not None:
                self._writer.mark(batch_id, batch)

    async def _write(self, batches: list[Batch]) -> None:
        await self._storage.save_batches([b.to_record() for b in batches])
        if self._finished_since_prune >= PRUNE_EVERY:
            self._finished_since_prune = 0
            await self._storage.prune_batches(KEEP_FINISHED)


def _is_current(move: BatchMove, obj: dict[str, Any]) -> bool:
    """Is `obj` the move's migration (or a newer one: the move re-queued after a restart)?"""
    return obj["id"] == move.migration or float(obj.get("created") or 0) >= move.migration_created
