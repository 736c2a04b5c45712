"""The server-owned migration service: owns every migration, running each as a background
task, and answers the migration.* / vm.migrate / REST calls about them.

A migration outlives the request (and the connection) that started it: `vm.migrate` only
awaits it. The service plans (server/migrations/plan.py), admits storage motion through the
queue (server/migrations/queue.py), has the runner execute it (server/migrations/runner.py:
XAPI's call sequence, retries, lost connections, the outcome), turns the XAPI task's progress
into monotonic progress with an ETA, publishes each migration as an object of type
`migration` in the live collection, and records it in SQLite: written behind (once per
event-loop tick), except a new migration, committed before `start` returns its id.

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
from typing import Any

from server import errors
from server.migrations.connections import PoolConnections
from server.migrations.hints import hint_for
from server.migrations.history import MigrationHistory
from server.migrations.model import Migration
from server.migrations.plan import MigrationRequest, Plan, PlanError, make_plan
from server.migrations.queue import AdmissionQueue
from server.migrations.recovery import MigrationRecovery
from server.migrations.runner import MigrationRunner, MigrationWork, migrate_send_args
from server.migrations.settings import MigrationSettings
from xen.errors import PoolUnavailable, TaskCancelled, XapiError
from xen.pools import PoolManager
from xen.store import ChangeSet, ObjectStore

__all__ = ["MigrationService", "MigrationSettings"]

log = logging.getLogger("xo_migrate.migrations")

PRUNE_EVERY = 50  # finished migrations between two history prunes


class MigrationService:
    def __init__(
        self,
        store: ObjectStore,
        pools: PoolManager | None,
        history: MigrationHistory,
        settings: MigrationSettings | None = None,
    ) -> None:
        self.store = store
        self.pools = pools
        self.history = history
        self.settings = settings or MigrationSettings()
        self.queue = AdmissionQueue(
            self.settings.per_pool_limit, self.settings.per_host_limit, self._queue_changed
        )
        self._migrations: dict[str, Migration] = {}
        self._by_vm: dict[str, Migration] = {}
        self._by_task: dict[tuple[str, str], Migration] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._dirty: dict[str, Migration] = {}
        self._flush_scheduled = False
        self._finished_since_prune = 0
        self._stopped = False
        self._in_line: set[str] = set()  # migrations last published with a queue position
        # Told of each migration as it ends, before its queue slot is given back (batches).
        self.finish_listeners: list[Callable[[Migration], None]] = []
        self._connections = PoolConnections(pools, self.settings)
        self._runner = MigrationRunner(store, self._connections, self.queue, self.settings, self)
        self._recovery = MigrationRecovery(store, history, self._connections, self._runner, self)
        self._unsubscribe = store.subscribe(self._on_changes)

    # -- lifecycle -------------------------------------------------------------------------

    def recover(self) -> None:
        """Pick up the migrations that were queued or running when the server stopped."""
        self._recovery.recover()

    async def aclose(self) -> None:
        self._closing = True
        self._unsubscribe()
        tasks = [*self._runners.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_history()
        self._stopped = True  # the history closes after us: late callbacks must not write

    @property
    def closing(self) -> bool:
        return self._closing

    async def recovered(self) -> None:
        """Return once the migrations found queued at start are queued again (or closed)."""
        await asyncio.gather(*self._recovery.pending, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task of the service's (cancelled and awaited by `aclose`)."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- queries ---------------------------------------------------------------------------

    def get(self, migration_id: str) -> dict[str, Any]:
        m = self._migrations.get(migration_id)
        if m is not None:
            return m.to_xo()
        record = self.history.get(migration_id)
        if record is None:
            raise errors.no_such_object(migration_id, "migration")
        return record

    def all(self, limit: int = 100) -> list[dict[str, Any]]:
        live = {m.id: m.to_xo() for m in self._migrations.values()}
        out = list(live.values())
        for record in self.history.recent(limit):
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

    def start(
        self, req: MigrationRequest, *, method: str, user_id: str | None, user_email: str | None
    ) -> Migration:
        """Plan and launch a migration; errors in planning are raised here, at once."""
        busy = self._by_vm.get(req.vm)
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
        # Acknowledged means committed: the id returned must survive a crash right after.
        self._flush_history()
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

    async def wait(self, migration_id: str) -> Migration:
        m = self._migrations.get(migration_id)
        if m is None:
            self.get(migration_id)  # raises no such object, or it is finished and known
            raise errors.forbidden_operation("wait", "this migration is no longer tracked live")
        await m.done.wait()
        return m

    async def wait_result(self, migration_id: str) -> None:
        """vm.migrate: return once finished; re-raise the migration's error otherwise."""
        m = await self.wait(migration_id)
        if m.status == "success":
            return
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
            record = self.get(migration_id)
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
            self.history.save(m.to_xo(), m.request_json)
            raise
        else:
            self._finish(m, status)
        finally:
            if m.active and not self._closing:
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
        record = m.to_xo()
        self.store.set(record)
        if persist:
            # Written behind, once per event-loop tick for every migration that changed:
            # a burst of 200 migrations costs a few transactions, not hundreds.
            self._dirty[m.id] = m
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_history)

    def _flush_history(self) -> None:
        self._flush_scheduled = False
        if self._stopped:
            return
        dirty, self._dirty = self._dirty, {}
        if dirty:
            self.history.save_many([(m.to_xo(), m.request_json) for m in dirty.values()])
        if self._finished_since_prune >= PRUNE_EVERY:
            self._finished_since_prune = 0
            self.history.prune(self.settings.history_keep)

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
