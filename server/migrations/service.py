"""The server-owned migration service: owns every migration, running each as a background
task, and answers the migration.* / vm.migrate / REST calls about them.

A migration outlives the request (and the connection) that started it: `vm.migrate` only
awaits it. The service plans (server/migrations/plan.py), admits storage motion through the
queue (server/migrations/queue.py), has the runner execute it (server/migrations/runner.py:
XAPI's call sequence, retries, lost connections, the outcome), turns the XAPI task's progress
into monotonic progress with an ETA, publishes each migration as an object of type
`migration` in the live collection, and records it in the store (server/storage/: SQLite or
Redis): written behind (server/storage/writer.py), except a new migration, committed before
`start` returns its id.

In a cluster (Redis, server/cluster/) the service owns the migrations this instance leases;
`cluster` publishes every change to the other instances, admits through the shared queue,
and hands over the migrations of a dead instance (adopted through `recovery`).

Shutting the server down stops watching migrations but never cancels them in XAPI: their
records stay `running` in the database and are adopted again at the next start
(server/migrations/recovery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from server import errors
from server.migrations.connections import PoolConnections
from server.migrations.hints import hint_for
from server.migrations.model import Migration
from server.migrations.plan import MigrationRequest, Plan, PlanError, make_plan
from server.migrations.queue import AdmissionQueue
from server.migrations.recovery import MigrationRecovery
from server.migrations.runner import MigrationRunner, MigrationWork, migrate_send_args
from server.migrations.settings import MigrationSettings
from server.storage import Storage
from server.storage.writer import WriteBehind
from xen.errors import PoolUnavailable, TaskCancelled, XapiError
from xen.pools import PoolManager
from xen.store import ChangeSet, ObjectStore

__all__ = ["MigrationService", "MigrationSettings"]

log = logging.getLogger("xo_migrate.migrations")

PRUNE_EVERY = 50  # finished migrations between two history prunes


class RemoteMigrations(Protocol):
    """The migrations other instances of a cluster own (server/cluster/)."""

    async def cancel(self, migration_id: str) -> dict[str, Any]: ...

    async def wait(self, migration_id: str) -> dict[str, Any]:
        """The record, once it has ended."""
        ...


class MigrationService:
    def __init__(
        self,
        store: ObjectStore,
        pools: PoolManager | None,
        storage: Storage,
        settings: MigrationSettings | None = None,
        queue: AdmissionQueue | None = None,
    ) -> None:
        self.store = store
        self.pools = pools
        self.storage = storage
        self.settings = settings or MigrationSettings()
        self.queue = queue or AdmissionQueue(
            self.settings.per_pool_limit, self.settings.per_host_limit
        )
        self.queue.on_change = self._queue_changed
        self._migrations: dict[str, Migration] = {}
        self._by_vm: dict[str, Migration] = {}
        self._by_task: dict[tuple[str, str], Migration] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._writer: WriteBehind[Migration] = WriteBehind("migrations", self._write)
        self._finished_since_prune = 0
        # Another instance's migrations (a cluster): cancel and wait go to their owner.
        self.remote: RemoteMigrations | None = None
        # Told of every change of a migration's object (the cluster publishes it).
        self.publish_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._in_line: set[str] = set()  # migrations last published with a queue position
        # Told of each migration as it ends, before its queue slot is given back (batches).
        self.finish_listeners: list[Callable[[Migration], None]] = []
        self._connections = PoolConnections(pools, self.settings)
        self._runner = MigrationRunner(store, self._connections, self.queue, self.settings, self)
        self.recovery = MigrationRecovery(store, storage, self._connections, self._runner, self)
        self._unsubscribe = store.subscribe(self._on_changes)

    # -- lifecycle -------------------------------------------------------------------------

    async def recover(self) -> None:
        """Pick up the migrations that were queued or running when the server stopped."""
        await self.recovery.recover()

    async def aclose(self) -> None:
        self._closing = True
        self._unsubscribe()
        tasks = [*self._runners.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._writer.aclose()  # the store closes after us

    @property
    def closing(self) -> bool:
        return self._closing

    async def recovered(self) -> None:
        """Return once the migrations found queued at start are queued again (or closed)."""
        await asyncio.gather(*self.recovery.pending, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task of the service's (cancelled and awaited by `aclose`)."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- queries ---------------------------------------------------------------------------

    def owns(self, migration_id: str) -> bool:
        return migration_id in self._migrations

    def live_ids(self) -> list[str]:
        """This instance's migrations not yet ended."""
        return [m.id for m in self._migrations.values() if m.active]

    def live(self, migration_id: str) -> Migration | None:
        return self._migrations.get(migration_id)

    async def get(self, migration_id: str) -> dict[str, Any]:
        m = self._migrations.get(migration_id)
        if m is not None:
            return m.to_xo()
        # Another instance's live migration (a cluster): its latest object, as published.
        obj = self.store.get(migration_id)
        if obj is not None and obj.get("type") == "migration":
            return dict(obj)
        record = await self.storage.migration(migration_id)
        if record is None:
            raise errors.no_such_object(migration_id, "migration")
        return record

    async def all(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.merge(await self.storage.recent_migrations(limit), limit)

    def merge(self, history: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        """The live migrations (this instance's and, in a cluster, the others' as published)
        and the history's records, newest first."""
        live = {m.id: m.to_xo() for m in self._migrations.values()}
        for obj in self.store.by_type("migration"):
            live.setdefault(obj["id"], dict(obj))
        out = list(live.values())
        for record in history:
            if record["id"] not in live:
                out.append(record)
        out.sort(key=lambda r: r["created"], reverse=True)
        return out[:limit]

    def live_for_vm(self, vm: str) -> Migration | None:
        """The VM's queued or running migration, if any."""
        return self._by_vm.get(vm)

    def plan(self, req: MigrationRequest) -> Plan:
        try:
            return make_plan(self.store, req)
        except PlanError as exc:
            raise exc.error from None

    async def dry_run(self, req: MigrationRequest) -> dict[str, Any]:
        """migration.plan: the plan plus XAPI's own verdict (`VM.assert_can_migrate`)."""
        plan = self.plan(req)
        out = plan.to_json()
        out["assertCanMigrate"] = await self._assert_outcome(plan, req)
        return out

    async def _assert_outcome(self, plan: Plan, req: MigrationRequest) -> dict[str, Any]:
        if not plan.storage_motion:
            return {
                "ran": False,
                "reason": "XenMotion (pool_migrate) has no XAPI dry run; see `blockers` for "
                "the refusals predicted from the blocked operations, power state and memory",
            }
        try:
            src = self._connections.connection(plan.source_pool)
            dst = self._connections.connection(plan.target_pool)
            dest = await dst.call(
                "host.migrate_receive", plan.target_host_ref, plan.migration_network_ref, {}
            )
            await src.call_async("VM.assert_can_migrate", *migrate_send_args(plan, req, dest))
        except XapiError as exc:
            return {"ran": True, "ok": False, "error": _error_view(exc.code, exc.params, str(exc))}
        except PoolUnavailable as exc:
            return {"ran": False, "ok": False, "reason": str(exc)}
        return {"ran": True, "ok": True}

    # -- start, wait, cancel ---------------------------------------------------------------

    async def start(
        self, req: MigrationRequest, *, method: str, user_id: str | None, user_email: str | None
    ) -> Migration:
        """`begin`, then return once its record is committed: the id returned must survive a
        crash right after."""
        m = self.begin(req, method=method, user_id=user_id, user_email=user_email)
        await self._writer.flush()
        return m

    def begin(
        self, req: MigrationRequest, *, method: str, user_id: str | None, user_email: str | None
    ) -> Migration:
        """Plan and launch a migration; errors in planning are raised here, at once. Its
        record is written behind (`start` waits for it)."""
        self.storage.check_writable()
        busy = self._by_vm.get(req.vm) or self._moving_elsewhere(req.vm)
        if busy is not None:
            raise errors.forbidden_operation(
                "migrate", f"VM {req.vm} is already being migrated by migration {busy.id}"
            )
        plan = self.plan(req)
        m = Migration(req, method, user_id, user_email, plan)
        m.status = "queued" if plan.storage_motion or req.batch else "running"
        if m.status == "running":
            m.started = time.time()
        self._migrations[m.id] = m
        self._by_vm[req.vm] = m
        self._launch(m, self._runner.execute)
        log.info(
            "migration=%s event=created vm=%s mode=%s source_pool=%s target_host=%s user=%s",
            m.id,
            plan.vm,
            plan.mode,
            plan.source_pool,
            plan.target_host,
            user_id,
        )
        return m

    def adopt(self, m: Migration, work: MigrationWork) -> None:
        """Track as live a migration XAPI is already running (found again at start): it holds
        its VM and its queue slot, and `work` follows it to the end."""
        self._migrations[m.id] = m
        self._by_vm[m.request.vm] = m
        if m.plan.storage_motion or m.request.batch:
            self.queue.hold(m.id, m.plan.source_pool, m.plan.source_host or m.plan.source_pool)
        self.task_started(m)
        self._launch(m, work)

    def _launch(self, m: Migration, work: MigrationWork) -> None:
        self.publish(m, persist=True)
        runner = asyncio.create_task(self._run(m, work), name=f"migration-{m.id}")
        self._runners[m.id] = runner
        runner.add_done_callback(lambda _: self._runners.pop(m.id, None))

    def _moving_elsewhere(self, vm: str) -> Any:
        """Another instance's live migration of `vm` (a cluster), as its published object."""
        for obj in self.store.by_type("migration"):
            if obj.get("vm") == vm and obj.get("status") in ("queued", "running"):
                return _Remote(str(obj["id"]))
        return None

    async def wait(self, migration_id: str) -> dict[str, Any]:
        """The migration's record once it has ended (whichever instance runs it)."""
        m = self._migrations.get(migration_id)
        if m is None:
            record = await self.get(migration_id)  # raises no such object
            if record.get("status") in ("queued", "running") and self.remote is not None:
                return await self.remote.wait(migration_id)
            if record.get("status") in ("queued", "running"):
                raise errors.forbidden_operation("wait", "this migration is not tracked live")
            return record
        await m.done.wait()
        if m.abandoned and self.remote is not None:
            return await self.remote.wait(migration_id)  # another instance finishes it
        return m.to_xo()

    async def wait_result(self, migration_id: str) -> None:
        """vm.migrate: return once finished; re-raise the migration's error otherwise."""
        m = self._migrations.get(migration_id)
        record = await self.wait(migration_id)
        if record["status"] == "success":
            return
        if m is None or m.abandoned:  # ended on another instance: its error, as recorded
            raise errors.server_error(
                (record.get("error") or {}).get("message", "migration failed"),
                {"code": (record.get("error") or {}).get("code", "MIGRATION_FAILED")},
            )
        if m.exception is not None:
            raise m.exception
        if m.status == "cancelled":
            raise TaskCancelled(m.xapi_task_ref or "")
        raise errors.server_error(
            (m.error or {}).get("message", "migration failed"), {"code": "MIGRATION_FAILED"}
        )

    async def cancel(self, migration_id: str) -> dict[str, Any]:
        m = self._migrations.get(migration_id)
        if m is None:
            record = await self.get(migration_id)
            if record.get("status") in ("queued", "running") and self.remote is not None:
                return await self.remote.cancel(migration_id)  # its owner cancels it
            return _cancel_answer("already_finished", record["status"], "already finished")
        if not m.active:
            return _cancel_answer("already_finished", m.status, "already finished")
        if m.xapi_done:
            return _cancel_answer(
                "too_late", m.status, "too late: XAPI has already finished the migration"
            )
        m.cancel_requested = True
        if not m.in_xapi_task:
            runner = self._runners.get(m.id)
            if runner is not None:
                runner.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.cancel_wait_s):
                    await m.done.wait()
            return _cancel_answer(None, m.status)
        task = self._xapi_task(m)
        if task is not None and "cancel" not in task.get("allowedOperations", []):
            m.cancel_requested = False
            return _cancel_answer(
                "too_late",
                m.status,
                "too late: XAPI no longer accepts cancellation at this phase "
                "(the VM is being switched over to the target host)",
            )
        try:
            conn = self._connections.connection(m.xapi_pool or m.plan.source_pool)
            if conn.status != "connected":  # say so now rather than after call()'s wait
                raise PoolUnavailable(conn.label, conn.last_error or conn.status)
            await conn.call("task.cancel", m.xapi_task_ref)
        except PoolUnavailable as exc:
            m.cancel_requested = False
            return _cancel_answer(
                "pool_unreachable",
                m.status,
                f"cannot reach the pool to cancel ({exc}); the migration goes on "
                "in XAPI and its outcome will be recorded once the pool is back",
            )
        except XapiError as exc:
            # Typically HANDLE_INVALID: the task ended (and was destroyed) meanwhile.
            m.cancel_requested = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.cancel_wait_s):
                    await m.done.wait()
            return _cancel_answer("refused", m.status, f"XAPI refused the cancellation: {exc}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.cancel_wait_s):
                await m.done.wait()
        if m.status == "cancelled" or not m.active:
            return _cancel_answer(
                "too_late",
                m.status,
                "XAPI did not honour the cancellation: it was already past its last "
                "cancellable point",
            )
        return _cancel_answer(
            "pending", m.status, "cancellation requested; XAPI has not answered yet"
        )

    # -- running ---------------------------------------------------------------------------

    async def _run(self, m: Migration, work: MigrationWork) -> None:
        try:
            status = await self._runner.run_to_end(m, work)
        except asyncio.CancelledError:
            # Server shutdown: keep the record as it is; it is recovered at the next start.
            if not m.abandoned:
                self._writer.mark(m.id, m)
            raise
        else:
            self._finish(m, status)
        finally:
            if m.active and not self._closing and not m.abandoned:
                # Whatever the exit, the VM lock and the queue slot must be given back.
                log.error("migration=%s event=ended_without_outcome", m.id)
                m.set_error("INTERNAL_ERROR", [], "the migration stopped without an outcome")
                self._finish(m, "failure")

    def _finish(self, m: Migration, status: str) -> None:
        m.status = status
        m.finished = time.time()
        m.queue_position = None
        m.waiting_for = None
        m.in_xapi_task = False
        if status == "success" and m.tracker is not None:
            m.tracker.finish()
        for listener in self.finish_listeners:
            listener(m)
        self.queue.release(m.id)
        if self._by_vm.get(m.request.vm) is m:
            del self._by_vm[m.request.vm]
        self.task_ended(m)
        self._finished_since_prune += 1
        self.publish(m, persist=True)
        m.done.set()
        log.info(
            "migration=%s event=finished status=%s vm=%s duration_s=%.1f error=%s",
            m.id,
            status,
            m.plan.vm,
            (m.finished - (m.started or m.created)),
            (m.error or {}).get("code"),
        )
        self.spawn(self._forget_later(m), f"forget-{m.id}")

    async def _forget_later(self, m: Migration) -> None:
        await asyncio.sleep(self.settings.finished_visible_s)
        self._migrations.pop(m.id, None)
        self.store.remove(m.id)

    # -- publishing ------------------------------------------------------------------------

    def _xapi_task(self, m: Migration) -> dict[str, Any] | None:
        if not (m.xapi_pool and m.xapi_task_ref):
            return None
        return self.store.by_ref(m.xapi_pool, m.xapi_task_ref)

    def task_started(self, m: Migration) -> None:
        if m.xapi_pool and m.xapi_task_ref:
            self._by_task[(m.xapi_pool, m.xapi_task_ref)] = m

    def task_ended(self, m: Migration) -> None:
        if m.xapi_pool and m.xapi_task_ref:
            self._by_task.pop((m.xapi_pool, m.xapi_task_ref), None)

    def publish(self, m: Migration, *, persist: bool = False) -> None:
        """Put the migration's object in the live collection; `persist`: in the history too."""
        if m.status == "queued":
            m.queue_position = self.queue.position(m.id)
        self._put(m, persist=persist)

    def _put(self, m: Migration, *, persist: bool = False) -> None:
        if m.queue_position is None:
            self._in_line.discard(m.id)
        else:
            self._in_line.add(m.id)
        if m.abandoned:
            return  # another instance owns it now
        record = m.to_xo()
        self.store.set(record)
        for listener in self.publish_listeners:
            listener(record)
        if persist:
            # Written behind: a burst of 200 migrations costs a few writes, not hundreds.
            self._writer.mark(m.id, m)

    async def _write(self, dirty: list[Migration]) -> None:
        await self.storage.save_migrations([(m.to_xo(), m.request_json) for m in dirty])
        if self._finished_since_prune >= PRUNE_EVERY:
            self._finished_since_prune = 0
            await self.storage.prune_migrations(self.settings.history_keep)

    def abandon(self, m: Migration) -> None:
        """Another instance owns `m` now (our lease was lost): stop following it here without
        touching XAPI or its record; its queue slot stays taken (the new owner holds it)."""
        if m.abandoned or not m.active:
            return
        m.abandoned = True
        m.done.set()  # its waiters here turn to the new owner (`wait`)
        runner = self._runners.get(m.id)
        if runner is not None:
            runner.cancel()
        self._migrations.pop(m.id, None)
        if self._by_vm.get(m.request.vm) is m:
            del self._by_vm[m.request.vm]
        self.task_ended(m)
        self._in_line.discard(m.id)
        self.queue.forget(m.id)
        log.warning("migration=%s event=abandoned reason=lease_lost", m.id)

    def _queue_changed(self) -> None:
        # One pass for every place in the line: a change re-numbers all who wait behind it.
        places = self.queue.positions()
        for key, place in places.items():
            m = self._migrations.get(key)
            if m is not None and m.queue_position != place:
                m.queue_position = place
                self._put(m)
        # Those admitted leave the line now, not when their runner next runs: no two
        # migrations ever show the same place.
        for key in [k for k in self._in_line if k not in places]:
            m = self._migrations.get(key)
            self._in_line.discard(key)
            if m is not None:
                m.queue_position = None
                self._put(m)

    def _on_changes(self, changes: ChangeSet) -> None:
        if not self._by_task:
            return
        for obj in changes.enter.values():
            if obj.get("type") != "task":
                continue
            m = self._by_task.get((obj.get("$pool", ""), obj.get("_xapiRef", "")))
            if m is None or not m.active:
                continue
            m.xapi_task_id = obj["id"]
            # Only a pending task's progress means anything: XAPI sets 1.0 on failure too.
            if (
                m.tracker is not None
                and m.in_xapi_task
                and m.tracker.transferring
                and obj.get("status") == "pending"
            ):
                m.tracker.observe(float(obj.get("progress") or 0.0))
                if "cancel" not in obj.get("allowedOperations", ["cancel"]):
                    m.tracker.enter_finishing()
            self.publish(m)


class _Remote:
    """Another instance's migration of a VM: enough to name it in a refusal."""

    __slots__ = ("id",)

    def __init__(self, migration_id: str) -> None:
        self.id = migration_id


def _error_view(code: str, params: list[str], message: str) -> dict[str, Any]:
    return {"code": code, "params": params, "message": message, "hint": hint_for(code)}


def _cancel_answer(outcome: str | None, status: str, reason: str = "") -> dict[str, Any]:
    """migration.cancel's result: `cancelled`, the migration's status, and when it was not
    cancelled a machine-readable `outcome` (already_finished | too_late | pool_unreachable |
    refused | pending) with a `reason` a person can read."""
    if status == "cancelled" and outcome != "already_finished":
        return {"cancelled": True, "status": status}
    answer: dict[str, Any] = {"cancelled": False, "status": status}
    answer["outcome"] = outcome or "too_late"
    answer["reason"] = reason or "the migration ended before the cancellation took effect"
    return answer
