"""The server-owned migration service: runs every migration as a background task it owns.

A migration outlives the request (and the connection) that started it: `vm.migrate` only
awaits it. The service plans (server/migrations/plan.py), admits storage motion through the
queue (server/migrations/queue.py), drives XAPI with xo-server's call sequence and retries,
turns the XAPI task's progress into monotonic progress with an ETA, publishes each migration
as an object of type `migration` in the live collection, and records it in SQLite.

XAPI call sequence per migration (no polling: tasks are awaited through the event stream):
- XenMotion: `Async.VM.pool_migrate`, `task.destroy` (2 calls);
- storage motion: `host.migrate_receive` on the target pool, `Async.VM.assert_can_migrate`,
  `task.destroy`, `Async.VM.migrate_send`, `task.destroy` (5 calls).

Shutting the server down stops watching migrations but never cancels them in XAPI: their
records stay `running` in the database and are picked up again at the next start.

Losing a pool mid-migration does not fail it: XAPI keeps migrating. Once the connection is
back (within `recover_wait_s`, else the record ends `interrupted`) the task is followed to its
end; a task XAPI forgot meanwhile is settled by where the VM is, as after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from server import errors
from server.errors import RpcError, XoError
from server.migrations.hints import hint_for
from server.migrations.history import MigrationHistory
from server.migrations.model import Migration
from server.migrations.plan import MigrationRequest, Plan, PlanError, make_plan, storage_fallback
from server.migrations.queue import AdmissionQueue
from xen.errors import PoolUnavailable, TaskCancelled, XapiError
from xen.store import ChangeSet, ObjectStore

log = logging.getLogger("xo_migrate.migrations")

PRUNE_EVERY = 50  # finished migrations between two history prunes


@dataclass(slots=True)
class MigrationSettings:
    per_pool_limit: int = 3  # concurrent storage migrations per source pool (xo-server: 3)
    per_host_limit: int = 3  # per source host (XAPI refuses a 4th)
    retry_delay_s: float = 10.0  # wait after TOO_MANY_STORAGE_MIGRATES (xo-server: 10 s)
    cancel_wait_s: float = 30.0  # how long migration.cancel waits for XAPI's answer
    history_keep: int = 1000  # finished migrations kept in the database
    finished_visible_s: float = 3600.0  # finished migrations stay in the live collection
    recover_wait_s: float = 60.0  # at start, how long to wait for a pool to recover a record
    arrival_wait_s: float = 10.0  # after success, how long to wait to see the VM on its target


class ConnectionLost(Exception):
    """We lost sight of a running XAPI task and its pool did not come back in time: the
    migration's outcome is unknown (status `interrupted`)."""

    def __init__(self, pool: str, reason: str) -> None:
        self.pool = pool
        self.reason = reason
        super().__init__(reason)


class MigrationService:
    def __init__(
        self,
        store: ObjectStore,
        pools: Any,
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
        self._unsubscribe = store.subscribe(self._on_changes)

    # -- lifecycle -------------------------------------------------------------------------

    def recover(self) -> None:
        """Pick up the migrations that were queued or running when the server stopped."""
        for record, request in self.history.active():
            self._spawn(self._recover(record, request), f"recover-{record['id']}")

    async def aclose(self) -> None:
        self._closing = True
        self._unsubscribe()
        tasks = [*self._runners.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_history()
        self._stopped = True  # the history closes after us: late callbacks must not write

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
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
                "reason": "XenMotion (pool_migrate) has no XAPI dry run; the memory and "
                "power-state checks above are what XAPI will verify",
            }
        try:
            src = self._connection(plan.source_pool)
            dst = self._connection(plan.target_pool)
            dest = await dst.call(
                "host.migrate_receive", plan.target_host_ref, plan.migration_network_ref, {}
            )
            await src.call_async("VM.assert_can_migrate", *self._send_args(plan, req, dest))
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
        m.status = "queued" if plan.storage_motion else "running"
        if m.status == "running":
            m.started = time.time()
        self._migrations[m.id] = m
        self._by_vm[req.vm] = m
        self._launch(m)
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

    def _launch(self, m: Migration) -> None:
        self._publish(m, persist=True)
        runner = asyncio.create_task(self._run(m), name=f"migration-{m.id}")
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
            conn = self._connection(m.xapi_pool or m.plan.source_pool)
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

    async def _run(self, m: Migration) -> None:
        try:
            await self._run_to_end(m)
        finally:
            if m.active and not self._closing:
                # Whatever the exit, the VM lock and the queue slot must be given back.
                log.error("migration=%s event=ended_without_outcome", m.id)
                m.set_error("INTERNAL_ERROR", [], "the migration stopped without an outcome")
                self._finish(m, "failure")

    async def _run_to_end(self, m: Migration) -> None:
        try:
            await self._execute(m)
        except asyncio.CancelledError:
            if self._closing or not m.cancel_requested:
                # Server shutdown: keep the record as it is; it is recovered at next start.
                self.history.save(m.to_xo(), m.request_json)
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            m.set_error("TASK_CANCELLED", [], "the migration was cancelled")
            self._finish(m, "cancelled")
        except TaskCancelled as exc:
            m.set_error("TASK_CANCELLED", exc.params, "the migration was cancelled")
            m.exception = exc
            self._finish(m, "cancelled")
        except XapiError as exc:
            m.set_error(exc.code, exc.params, str(exc))
            m.exception = exc
            self._finish(m, "failure")
        except PlanError as exc:
            m.set_error(exc.code or "PLAN_FAILED", [], exc.error.message)
            m.exception = exc.error
            self._finish(m, "failure")
        except (XoError, RpcError) as exc:
            m.set_error(
                str((exc.data or {}).get("code", "ERROR"))
                if isinstance(exc.data, dict)
                else "ERROR",
                [],
                exc.message,
            )
            m.exception = exc
            self._finish(m, "failure")
        except PoolUnavailable as exc:
            pool_id = self._pool_id(exc.pool)
            m.set_error("POOL_UNAVAILABLE", [pool_id], str(exc))
            m.exception = PoolUnavailable(pool_id, exc.reason)  # vm.migrate: objectId = pool
            self._finish(m, "failure")
        except ConnectionLost as exc:
            m.set_error("CONNECTION_LOST", [exc.pool], exc.reason)
            m.exception = PoolUnavailable(exc.pool, exc.reason)
            self._finish(m, "interrupted")
        except Exception as exc:
            log.exception("migration=%s event=crashed", m.id)
            m.set_error("INTERNAL_ERROR", [], f"{type(exc).__name__}: {exc}")
            m.exception = exc
            self._finish(m, "failure")
        else:
            m.xapi_done = True  # from now on cancel() says "too late"
            await self._await_arrival(m)
            self._finish(m, "success")

    async def _await_arrival(self, m: Migration) -> None:
        """XAPI said success; wait (bounded) until the live collection shows the VM on its
        target too, so that a client reading objects right after `true` sees it there."""
        deadline = time.monotonic() + self.settings.arrival_wait_s
        while time.monotonic() < deadline:
            vm = self.store.get(m.plan.vm)
            if vm is not None and vm.get("$container") == m.plan.target_host:
                return
            await asyncio.sleep(0.02)
        log.warning("migration=%s event=arrival_not_seen vm=%s", m.id, m.plan.vm)

    def _finish(self, m: Migration, status: str) -> None:
        m.status = status
        m.finished = time.time()
        m.queue_position = None
        m.waiting_for = None
        m.in_xapi_task = False
        if status == "success" and m.tracker is not None:
            m.tracker.finish()
        self.queue.release(m.id)
        if self._by_vm.get(m.request.vm) is m:
            del self._by_vm[m.request.vm]
        if m.xapi_pool and m.xapi_task_ref:
            self._by_task.pop((m.xapi_pool, m.xapi_task_ref), None)
        self._finished_since_prune += 1
        self._publish(m, persist=True)
        m.done.set()
        log.info(
            "migration=%s event=finished status=%s vm=%s duration_s=%.1f error=%s",
            m.id,
            status,
            m.plan.vm,
            (m.finished - (m.started or m.created)),
            (m.error or {}).get("code"),
        )
        self._spawn(self._forget_later(m), f"forget-{m.id}")

    async def _forget_later(self, m: Migration) -> None:
        await asyncio.sleep(self.settings.finished_visible_s)
        self._migrations.pop(m.id, None)
        self.store.remove(m.id)

    async def _execute(self, m: Migration) -> None:
        plan = m.plan
        src = self._connection(plan.source_pool)
        if not plan.storage_motion:
            m.new_tracker()
            options = {"force": "true" if m.request.force else "false"}
            if plan.migration_network_ref:
                options["network"] = plan.migration_network_ref
            try:
                await self._xapi_call(
                    m, src, "VM.pool_migrate", plan.vm_ref, plan.target_host_ref, options
                )
                return
            except XapiError as exc:
                if exc.code != "VM_REQUIRES_SR":
                    raise
            log.info("migration=%s event=fallback reason=VM_REQUIRES_SR", m.id)
            try:
                m.plan = plan = storage_fallback(self.store, plan, m.request)
            except PlanError:
                raise
            m.status = "queued"
            self._publish(m, persist=True)
        await self._storage_motion(m, src)

    async def _storage_motion(self, m: Migration, src: Any) -> None:
        plan = m.plan
        await self.queue.acquire(m.id, plan.source_pool, plan.source_host or plan.source_pool)
        m.queue_position = None
        m.status = "running"
        m.started = m.started or time.time()
        m.new_tracker()
        self._publish(m, persist=True)
        dst = self._connection(plan.target_pool)
        dest = await dst.call(
            "host.migrate_receive", plan.target_host_ref, plan.migration_network_ref, {}
        )
        args = self._send_args(plan, m.request, dest)
        if not m.request.bypass_assert:
            try:
                await self._xapi_call(m, src, "VM.assert_can_migrate", *args, track=False)
            except XapiError as exc:
                if exc.code != "VDI_CBT_ENABLED":  # handled by the send loop, as xo-server
                    raise
        cbt_disabled = False
        while True:
            try:
                await self._xapi_call(m, src, "VM.migrate_send", *args)
                return
            except XapiError as exc:
                if exc.code == "VDI_CBT_ENABLED" and not cbt_disabled:
                    cbt_disabled = True
                    await self._disable_cbt(src, m.plan)
                    continue
                if exc.code == "TOO_MANY_STORAGE_MIGRATES":
                    m.waiting_for = "TOO_MANY_STORAGE_MIGRATES: retrying"
                    self._publish(m)
                    await asyncio.sleep(self.settings.retry_delay_s)
                    m.waiting_for = None
                    continue
                raise

    async def _disable_cbt(self, src: Any, plan: Plan) -> None:
        for disk in plan.disks:
            if disk.moves and disk.cbt_enabled:
                await src.call("VDI.disable_cbt", disk.vdi_ref)

    @staticmethod
    def _send_args(plan: Plan, req: MigrationRequest, dest: dict[str, str]) -> list[Any]:
        # Six args, as xo-server sends them: vgpu_map and vdi_format_map keep their defaults.
        return [
            plan.vm_ref,
            dest,
            True,
            plan.vdi_map(),
            plan.vif_map(),
            {"force": "true" if req.force else "false"},
        ]

    async def _xapi_call(
        self, m: Migration, conn: Any, method: str, *args: Any, track: bool = True
    ) -> Any:
        """`Async.<method>` on `conn`, as `call_async`; `track`: it moves the VM (progress is
        followed, and a task that vanishes is settled by where the VM ended up)."""
        started: list[str] = []

        def on_task(task_ref: str) -> None:
            started.append(task_ref)
            m.xapi_pool = conn.pool_id
            m.xapi_task_ref = task_ref
            m.xapi_task_id = None
            m.in_xapi_task = True
            if m.xapi_pool:
                self._by_task[(m.xapi_pool, task_ref)] = m
            if track and m.tracker is not None:
                m.tracker.start_transfer()
            self._publish(m, persist=True)

        def user_cancelled() -> bool:
            # A cancel that lands while the Async call is in flight: cancel the task once
            # known. A shutdown leaves it running (it is recovered at the next start).
            return m.cancel_requested and not self._closing

        try:
            return await conn.call_async(
                method, *args, on_task=on_task, cancel_on_cancel=user_cancelled
            )
        except PoolUnavailable as exc:
            if not started:
                raise  # nothing was started in XAPI
            log.warning(
                "migration=%s event=task_out_of_sight task=%s error=%s", m.id, started[-1], exc
            )
            return await self._follow_task(m, m.xapi_pool or conn.pool_id, started[-1], track)
        except XapiError as exc:
            if exc.code != "TASK_DESTROYED" or not started or not track:
                raise
            return await self._task_vanished(m, started[-1])
        finally:
            m.in_xapi_task = False
            if m.xapi_pool and m.xapi_task_ref:
                self._by_task.pop((m.xapi_pool, m.xapi_task_ref), None)

    async def _follow_task(self, m: Migration, pool_id: str, task_ref: str, track: bool) -> Any:
        """The connection dropped while XAPI ran our task: wait (bounded) for the pool to come
        back, then follow the task to its end through the resynced stream."""
        while True:
            conn = await self._ready_connection(pool_id)
            if conn is None:
                raise ConnectionLost(
                    pool_id,
                    f"lost the connection to pool {pool_id} while XAPI was running the "
                    f"migration (task {task_ref}) and it did not come back within "
                    f"{self.settings.recover_wait_s:.0f} s; the outcome is unknown",
                )
            try:
                return await conn.follow_task(task_ref)
            except PoolUnavailable as exc:
                log.warning("migration=%s event=task_out_of_sight error=%s", m.id, exc)
            except XapiError as exc:
                if exc.code != "TASK_DESTROYED" or not track:
                    raise
                return await self._task_vanished(m, task_ref)

    async def _task_vanished(self, m: Migration, task_ref: str) -> None:
        """XAPI forgot the task before we saw it end (a toolstack restart, a GC): the VM's
        place says how it went, as after a server restart."""
        plan = m.plan
        deadline = time.monotonic() + self.settings.arrival_wait_s
        while True:
            vm = self.store.get(plan.vm)
            where = vm.get("$container") if vm is not None else None
            if where == plan.target_host:
                log.info("migration=%s event=task_vanished vm_arrived=true", m.id)
                return
            # Still listed by the source pool (just resynced) on another host: it did not move.
            stayed = vm is not None and vm.get("$pool") == plan.source_pool and where
            if stayed or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        host = self.store.get(where) if where else None
        place = (
            f"still on {host.get('name_label') or where}"
            if host is not None
            else "not on its target host"
        )
        raise XapiError(
            "TASK_DESTROYED",
            [task_ref, f"XAPI lost the migration task before it ended; the VM is {place}"],
        )

    def _pool_id(self, name: str) -> str:
        """A pool uuid for a PoolUnavailable that names its connection's label."""
        connections = self.pools.connections() if self.pools is not None else []
        for conn in connections:
            if conn.pool_id and name in (conn.label, conn.pool_id):
                return str(conn.pool_id)
        return name

    # -- recovery after a restart ----------------------------------------------------------

    async def _recover(self, record: dict[str, Any], request: dict[str, Any]) -> None:
        req = MigrationRequest.from_json(request)
        conn = await self._ready_connection(record.get("sourcePool"))
        if record["status"] == "queued" and conn is not None:
            try:
                m = self.start(
                    req,
                    method=record.get("method", "vm.migrate"),
                    user_id=record.get("user"),
                    user_email=record.get("userEmail"),
                )
            except (XoError, RpcError) as exc:
                record.update(status="failure", finished=time.time())
                record["error"] = {"code": "REQUEUE_FAILED", "params": [], "message": exc.message}
                self.history.save(record, request)
                return
            # Keep one record: the old id now points at the re-queued migration.
            record.update(status="interrupted", finished=time.time())
            record["error"] = {
                "code": "SERVER_RESTARTED",
                "params": [m.id],
                "message": f"re-queued after a restart as migration {m.id}",
                "hint": "Nothing to do: the migration was queued again.",
            }
            self.history.save(record, request)
            return
        # Running at the stop: XAPI kept going without us. Follow its task to the end (from
        # the cache: no XAPI call), then say how it ended and where the VM is.
        task = await self._settled_task(record, conn)
        vm = self.store.get(req.vm)
        arrived = vm is not None and vm.get("$container") == record.get("targetHost")
        record["finished"] = time.time()
        if (task is not None and task.get("status") == "success") or arrived:
            record.update(status="success", progress=1.0, phase="done", eta=0.0, error=None)
        elif task is not None and task.get("status") in ("failure", "cancelled"):
            info = list(task.get("error_info") or [])
            code = info[0] if info else "TASK_CANCELLED"
            record.update(status="cancelled" if task["status"] == "cancelled" else "failure")
            record["error"] = {
                "code": code,
                "params": info[1:],
                "message": f"{code}({', '.join(info[1:])})",
                "hint": hint_for(code),
            }
        else:
            record.update(status="interrupted")
            record["error"] = {
                "code": "SERVER_RESTARTED",
                "params": [],
                "message": "the server restarted while this migration was running",
                "hint": "Check where the VM is now; start the migration again if needed.",
            }
        record.update(rate=None, queuePosition=None, waitingFor=None)
        self.history.save(record, request)
        self.store.set(record)
        if task is not None and conn is not None and task.get("status") != "pending":
            with contextlib.suppress(XapiError, PoolUnavailable):
                await conn.call("task.destroy", task["_xapiRef"])

    async def _settled_task(self, record: dict[str, Any], conn: Any) -> dict[str, Any] | None:
        pool, ref = record.get("xapiPool"), record.get("xapiTaskRef")
        if conn is None or not pool or not ref:
            return None
        while True:
            task = self.store.by_ref(pool, ref)
            if task is None or task.get("status") != "pending":
                return task
            await asyncio.sleep(0.2)

    async def _ready_connection(self, pool_id: str | None) -> Any:
        deadline = time.monotonic() + self.settings.recover_wait_s
        while time.monotonic() < deadline:
            conn = self.pools.connection_for_pool(pool_id) if pool_id else None
            if conn is not None:
                with contextlib.suppress(PoolUnavailable):
                    await conn.wait_ready(max(0.1, deadline - time.monotonic()))
                    return conn
            await asyncio.sleep(0.5)
        return None

    # -- publishing ------------------------------------------------------------------------

    def _connection(self, pool_id: str) -> Any:
        conn = self.pools.connection_for_pool(pool_id) if self.pools is not None else None
        if conn is None:
            raise PoolUnavailable(pool_id, "not connected")
        return conn

    def _xapi_task(self, m: Migration) -> dict[str, Any] | None:
        if not (m.xapi_pool and m.xapi_task_ref):
            return None
        return self.store.by_ref(m.xapi_pool, m.xapi_task_ref)

    def _publish(self, m: Migration, *, persist: bool = False) -> None:
        if m.status == "queued":
            m.queue_position = self.queue.position(m.id)
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
        for key in self.queue.waiting():
            m = self._migrations.get(key)
            if m is not None and m.queue_position != self.queue.position(key):
                self._publish(m)

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
            self._publish(m)


def _error_view(code: str, params: list[str], message: str) -> dict[str, Any]:
    return {"code": code, "params": params, "message": message, "hint": hint_for(code)}


def _cancel_answer(outcome: str | None, status: str, reason: str = "") -> dict[str, Any]:
    """migration.cancel's result: `cancelled`, the migration's status, and when it was not
    cancelled a machine-readable `outcome` (already_finished | too_late | pool_unreachable |
    refused | pending) with a `reason` a person can read."""
    if status == "cancelled":
        return {"cancelled": True, "status": status}
    answer: dict[str, Any] = {"cancelled": False, "status": status}
    answer["outcome"] = outcome or "too_late"
    answer["reason"] = reason or "the migration ended before the cancellation took effect"
    return answer
