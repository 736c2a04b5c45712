"""The execution of one migration: XAPI's call sequence with xo-server's retries and fallbacks,
following the XAPI task through lost connections, and how it ended turned into a status.

XAPI call sequence per migration (no polling: tasks are awaited through the event stream):
- XenMotion: `Async.VM.pool_migrate`, `task.destroy` (2 calls);
- storage motion: `host.migrate_receive` on the target pool, `Async.VM.assert_can_migrate`,
  `task.destroy`, `Async.VM.migrate_send`, `task.destroy` (5 calls).

Losing a pool mid-migration does not fail it: XAPI keeps migrating. Once the connection is
back (within `recover_wait_s`, else the migration ends `interrupted`) the task is followed to
its end; a task XAPI forgot meanwhile is settled by where the VM is.

The runner owns no migration: the service that does (server/migrations/service.py) publishes
them and is told when an XAPI task starts and ends (`RunnerOwner`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from server.errors import RpcError, XoError
from server.migrations.connections import PoolConnections
from server.migrations.model import Migration
from server.migrations.plan import MigrationRequest, Plan, PlanError, storage_fallback
from server.migrations.queue import AdmissionQueue
from server.migrations.settings import MigrationSettings
from xen.errors import PoolUnavailable, TaskCancelled, XapiError
from xen.pool import PoolConnection
from xen.store import ObjectStore

log = logging.getLogger("xo_migrate.migrations")

# What a migration does until XAPI has finished it: `MigrationRunner.execute` for a new one.
MigrationWork = Callable[[Migration], Awaitable[None]]


class RunnerOwner(Protocol):
    """What the runner needs from the service that owns the migrations."""

    @property
    def closing(self) -> bool:
        """The server is shutting down: leave XAPI tasks running, they are recovered later."""
        ...

    def publish(self, m: Migration, *, persist: bool = False) -> None: ...

    def task_started(self, m: Migration) -> None:
        """`m.xapi_task_ref` is a task that moves the VM: follow its progress."""
        ...

    def task_ended(self, m: Migration) -> None: ...


class OutcomeUnknown(Exception):
    """We lost sight of a migration XAPI was running: how it ended is unknown (status
    `interrupted`). `code` and `params` go into the migration's error."""

    code = "OUTCOME_UNKNOWN"

    def __init__(self, reason: str, params: list[str] | None = None) -> None:
        self.reason = reason
        self.params = params or []
        super().__init__(reason)

    def for_caller(self) -> BaseException | None:
        """What vm.migrate re-raises to a caller still waiting (None: a generic error)."""
        return None


class ConnectionLost(OutcomeUnknown):
    """The pool of a running XAPI task did not come back in time."""

    code = "CONNECTION_LOST"

    def __init__(self, pool: str, reason: str) -> None:
        self.pool = pool
        super().__init__(reason, [pool])

    def for_caller(self) -> BaseException:
        return PoolUnavailable(self.pool, self.reason)  # vm.migrate: objectId = pool


def migrate_send_args(plan: Plan, req: MigrationRequest, dest: dict[str, str]) -> list[Any]:
    """`VM.migrate_send` / `VM.assert_can_migrate` arguments after the session."""
    # Six args, as xo-server sends them: vgpu_map and vdi_format_map keep their defaults.
    return [
        plan.vm_ref,
        dest,
        True,
        plan.vdi_map(),
        plan.vif_map(),
        {"force": "true" if req.force else "false"},
    ]


class MigrationRunner:
    def __init__(
        self,
        store: ObjectStore,
        pools: PoolConnections,
        queue: AdmissionQueue,
        settings: MigrationSettings,
        owner: RunnerOwner,
    ) -> None:
        self._store = store
        self._pools = pools
        self._queue = queue
        self._settings = settings
        self._owner = owner

    # -- outcome -------------------------------------------------------------------------

    async def run_to_end(self, m: Migration, work: MigrationWork) -> str:
        """Run `work` and return the migration's final status, its error set on `m`.
        CancelledError goes through when the server is shutting down (nothing is decided)."""
        try:
            await work(m)
        except asyncio.CancelledError:
            if self._owner.closing or not m.cancel_requested:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            m.set_error("TASK_CANCELLED", [], "the migration was cancelled")
            return "cancelled"
        except TaskCancelled as exc:
            m.set_error("TASK_CANCELLED", exc.params, "the migration was cancelled")
            m.exception = exc
            return "cancelled"
        except XapiError as exc:
            m.set_error(exc.code, exc.params, str(exc))
            m.exception = exc
            return "failure"
        except PlanError as exc:
            m.set_error(exc.code or "PLAN_FAILED", [], exc.error.message)
            m.exception = exc.error
            return "failure"
        except (XoError, RpcError) as exc:
            code = (
                str((exc.data or {}).get("code", "ERROR"))
                if isinstance(exc.data, dict)
                else "ERROR"
            )
            m.set_error(code, [], exc.message)
            m.exception = exc
            return "failure"
        except PoolUnavailable as exc:
            pool_id = self._pools.pool_id(exc.pool)
            m.set_error("POOL_UNAVAILABLE", [pool_id], str(exc))
            m.exception = PoolUnavailable(pool_id, exc.reason)  # vm.migrate: objectId = pool
            return "failure"
        except OutcomeUnknown as exc:
            m.set_error(exc.code, exc.params, exc.reason)
            m.exception = exc.for_caller()
            return "interrupted"
        except Exception as exc:
            log.exception("migration=%s event=crashed", m.id)
            m.set_error("INTERNAL_ERROR", [], f"{type(exc).__name__}: {exc}")
            m.exception = exc
            return "failure"
        m.xapi_done = True  # from now on cancel() says "too late"
        await self._await_arrival(m)
        return "success"

    async def _await_arrival(self, m: Migration) -> None:
        """XAPI said success; wait (bounded) until the live collection shows the VM on its
        target too, so that a client reading objects right after `true` sees it there."""
        deadline = time.monotonic() + self._settings.arrival_wait_s
        while time.monotonic() < deadline:
            vm = self._store.get(m.plan.vm)
            if vm is not None and vm.get("$container") == m.plan.target_host:
                return
            await asyncio.sleep(0.02)
        log.warning("migration=%s event=arrival_not_seen vm=%s", m.id, m.plan.vm)

    # -- a new migration -----------------------------------------------------------------

    async def execute(self, m: Migration) -> None:
        """XenMotion, falling back to storage motion on VM_REQUIRES_SR; or storage motion."""
        plan = m.plan
        src = self._pools.connection(plan.source_pool)
        if not plan.storage_motion:
            if m.request.batch:
                # A batch's XenMotion waits its turn too: the limits and pause apply to it.
                await self._admit(m)
                m.new_tracker()
                self._owner.publish(m, persist=True)
            else:
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
            m.plan = plan = storage_fallback(self._store, plan, m.request)
            m.status = "queued"
            self._owner.publish(m, persist=True)
        await self._storage_motion(m, src)

    async def _admit(self, m: Migration) -> None:
        """Wait for a queue slot (unless held already: a fallback keeps its slot)."""
        plan = m.plan
        if not self._queue.holds(m.id):
            await self._queue.acquire(
                m.id, plan.source_pool, plan.source_host or plan.source_pool, m.request.batch
            )
        m.queue_position = None
        m.status = "running"
        m.started = m.started or time.time()

    async def _storage_motion(self, m: Migration, src: PoolConnection) -> None:
        plan = m.plan
        await self._admit(m)
        m.new_tracker()
        self._owner.publish(m, persist=True)
        dst = self._pools.connection(plan.target_pool)
        dest = await dst.call(
            "host.migrate_receive", plan.target_host_ref, plan.migration_network_ref, {}
        )
        args = migrate_send_args(plan, m.request, dest)
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
                    self._owner.publish(m)
                    await asyncio.sleep(self._settings.retry_delay_s)
                    m.waiting_for = None
                    continue
                raise

    async def _disable_cbt(self, src: PoolConnection, plan: Plan) -> None:
        for disk in plan.disks:
            if disk.moves and disk.cbt_enabled:
                await src.call("VDI.disable_cbt", disk.vdi_ref)

    async def _xapi_call(
        self, m: Migration, conn: PoolConnection, method: str, *args: Any, track: bool = True
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
            self._owner.task_started(m)
            if track and m.tracker is not None:
                m.tracker.start_transfer()
            self._owner.publish(m, persist=True)

        def user_cancelled() -> bool:
            # A cancel that lands while the Async call is in flight: cancel the task once
            # known. A shutdown leaves it running (it is recovered at the next start).
            return m.cancel_requested and not self._owner.closing

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
            pool_id = m.xapi_pool or conn.pool_id or ""
            return await self.follow_task(m, pool_id, started[-1], track)
        except XapiError as exc:
            if exc.code != "TASK_DESTROYED" or not started or not track:
                raise
            return await self._task_vanished(m, started[-1])
        finally:
            m.in_xapi_task = False
            self._owner.task_ended(m)

    # -- following a task we lost sight of -----------------------------------------------

    async def follow_task(self, m: Migration, pool_id: str, task_ref: str, track: bool) -> Any:
        """Follow an XAPI task we are not (or no longer) awaiting, to its end: wait (bounded)
        for its pool to be connected, then follow it through the resynced event stream; if
        the connection drops again, again. Returns its result, raises its error;
        ConnectionLost if the pool does not come back; with `track`, a task XAPI forgot is
        settled by where the VM is (XapiError TASK_DESTROYED if it did not arrive)."""
        while True:
            conn = await self._pools.ready(pool_id)
            if conn is None:
                raise ConnectionLost(
                    pool_id,
                    f"lost the connection to pool {pool_id} while XAPI was running the "
                    f"migration (task {task_ref}) and it did not come back within "
                    f"{self._settings.recover_wait_s:.0f} s; the outcome is unknown",
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
        deadline = time.monotonic() + self._settings.arrival_wait_s
        while True:
            vm = self._store.get(plan.vm)
            where = vm.get("$container") if vm is not None else None
            if where == plan.target_host:
                log.info("migration=%s event=task_vanished vm_arrived=true", m.id)
                return
            # Still listed by the source pool (just resynced) on another host: it did not move.
            stayed = vm is not None and vm.get("$pool") == plan.source_pool and where
            if stayed or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        host = self._store.get(where) if where else None
        place = (
            f"still on {host.get('name_label') or where}"
            if host is not None
            else "not on its target host"
        )
        raise XapiError(
            "TASK_DESTROYED",
            [task_ref, f"XAPI lost the migration task before it ended; the VM is {place}"],
        )
