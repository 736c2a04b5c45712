"""Migrations found queued or running in the history at start (the server stopped meanwhile).

A queued one is queued again as a new migration once its source pool is connected; its old
record ends `interrupted` and points at the new one.

A running one kept going in XAPI without us. It is adopted again as a live migration (same
id, same user): its plan is rebuilt from its request once the objects are known (until then,
and if the objects no longer allow it, a plan made from the record stands in), and its XAPI
task is followed to the end like any running migration's: progress pushed, `migration.wait`
and `migration.cancel` (while XAPI accepts it) work. Without a task to follow (XAPI forgot
it, or none was started) or if its pool does not come back within `recover_wait_s`, where
the VM is decides: on its target host it is a success, otherwise the outcome is unknown
(`interrupted`, SERVER_RESTARTED).

In a cluster the same path adopts the migrations of an instance that died (`take_over`, once
this instance holds their lease): the record in the shared store is where that instance left
it, and the latest progress other instances saw (their copy of its object) is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from server.errors import RpcError, XoError
from server.migrations.connections import PoolConnections
from server.migrations.model import Migration
from server.migrations.plan import (
    DiskPlan,
    MigrationRequest,
    Plan,
    PlanError,
    make_plan,
    storage_fallback,
    vm_memory_needed,
)
from server.migrations.runner import MigrationRunner, MigrationWork, OutcomeUnknown
from server.storage import Storage
from xen.errors import PoolUnavailable, XapiError
from xen.store import ObjectStore, XoObject

log = logging.getLogger("xo_migrate.migrations")

RECORDED_PLAN_REASON = "recovered after a restart: the plan as the migration's record has it"


class RecoveryOwner(Protocol):
    """What recovery needs from the service that owns the migrations."""

    async def start(
        self, req: MigrationRequest, *, method: str, user_id: str | None, user_email: str | None
    ) -> Migration: ...

    def adopt(self, m: Migration, work: MigrationWork) -> None:
        """Track `m` (already running in XAPI) as live and run `work` as its execution."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


class ServerRestarted(OutcomeUnknown):
    """A migration running when the server stopped whose end we cannot see."""

    code = "SERVER_RESTARTED"

    def __init__(self) -> None:
        super().__init__("the server restarted while this migration was running")


class MigrationRecovery:
    def __init__(
        self,
        store: ObjectStore,
        storage: Storage,
        pools: PoolConnections,
        runner: MigrationRunner,
        owner: RecoveryOwner,
    ) -> None:
        self._store = store
        self._storage = storage
        self._pools = pools
        self._runner = runner
        self._owner = owner
        # The re-queueing tasks started by `recover` (the batches wait for them).
        self.pending: list[asyncio.Task[None]] = []

    async def recover(self, leased: set[str] | None = None) -> None:
        """Running migrations are adopted at once (they hold their VM and queue slot before
        any re-queued one asks for it); queued ones wait for their pool. `leased`: in a
        cluster, only those whose lease this instance took."""
        for record, request in await self._storage.active_migrations():
            if leased is None or record["id"] in leased:
                self.take_over(record, request)

    def take_over(self, record: dict[str, Any], request: dict[str, Any]) -> None:
        """Adopt one migration left queued or running (by a restart, or a dead instance)."""
        if record["status"] == "running":
            m = self._adopted(record, request)
            log.info("migration=%s event=adopted vm=%s task=%s", m.id, m.plan.vm, m.xapi_task_ref)
            self._owner.adopt(m, self._resume)
        else:
            task = self._owner.spawn(self._requeue(record, request), f"recover-{record['id']}")
            self.pending.append(task)
            task.add_done_callback(self.pending.remove)

    # -- running at the stop -------------------------------------------------------------

    def _adopted(self, record: dict[str, Any], request: dict[str, Any]) -> Migration:
        req = MigrationRequest.from_json(request)
        m = Migration(
            req,
            record.get("method", "vm.migrate"),
            record.get("user"),
            record.get("userEmail"),
            plan_from_record(record, self._store.get(req.vm)),
            id=record["id"],
            status="running",
            created=record["created"],
            started=record.get("started") or record["created"],
        )
        m.xapi_pool = record.get("xapiPool")
        m.xapi_task_ref = record.get("xapiTaskRef")
        m.xapi_task_id = record.get("xapiTask")
        m.in_xapi_task = bool(m.xapi_pool and m.xapi_task_ref)
        # The record is written at status changes; the object other instances last saw may
        # be further on: progress never goes back.
        seen = self._store.get(m.id) or {}
        progress = max(float(record.get("progress") or 0.0), float(seen.get("progress") or 0.0))
        m.new_tracker().resume(seen.get("phase") or record.get("phase") or "preflight", progress)
        return m

    async def _resume(self, m: Migration) -> None:
        """The execution of an adopted migration: follow its XAPI task to the end."""
        try:
            pool_id = m.xapi_pool or m.plan.source_pool
            if await self._pools.ready(pool_id) is None:
                self._settle_by_place(m)  # the target pool may show the VM arrived
                return
            self._replan(m)
            task_ref = m.xapi_task_ref
            if not (m.xapi_pool and task_ref):
                self._settle_by_place(m)  # stopped before XAPI had a task
                return
            task = self._store.by_ref(m.xapi_pool, task_ref)
            if task is not None and "assert_can_migrate" in str(task.get("name_label", "")):
                # Stopped during the pre-check: the VM never started to move.
                with contextlib.suppress(XapiError, PoolUnavailable, OutcomeUnknown):
                    await self._runner.follow_task(m, m.xapi_pool, task_ref, track=False)
                self._settle_by_place(m)
                return
            try:
                await self._runner.follow_task(m, m.xapi_pool, task_ref, track=True)
            except XapiError as exc:
                if exc.code != "TASK_DESTROYED":
                    raise
                raise ServerRestarted() from None  # gone, and the VM is not on its target
        finally:
            m.in_xapi_task = False  # its progress stops counting (the service's _finish)

    def _settle_by_place(self, m: Migration) -> None:
        vm = self._store.get(m.plan.vm)
        if vm is None or vm.get("$container") != m.plan.target_host:
            raise ServerRestarted()

    def _replan(self, m: Migration) -> None:
        """The plan from the request, now that the objects are known, if it is the same
        migration as recorded (mode, pools, hosts); it gives the bytes of each phase."""
        try:
            plan = make_plan(self._store, m.request)
            if m.plan.storage_motion and not plan.storage_motion:
                plan = storage_fallback(self._store, plan, m.request)  # fell back before
        except PlanError:
            return
        recorded = m.plan
        same = (plan.mode, plan.source_pool, plan.source_host, plan.target_host) == (
            recorded.mode,
            recorded.source_pool,
            recorded.source_host,
            recorded.target_host,
        )
        if not same or m.tracker is None:
            return
        view, phase = m.tracker.view(), m.tracker.phase
        m.plan = plan
        m.new_tracker().resume(phase, view.progress)

    # -- queued at the stop --------------------------------------------------------------

    async def _requeue(self, record: dict[str, Any], request: dict[str, Any]) -> None:
        req = MigrationRequest.from_json(request)
        if await self._pools.ready(record.get("sourcePool")) is None:
            await self._close_record(record, request)
            return
        try:
            m = await self._owner.start(
                req,
                method=record.get("method", "vm.migrate"),
                user_id=record.get("user"),
                user_email=record.get("userEmail"),
            )
        except (XoError, RpcError) as exc:
            record.update(status="failure", finished=time.time())
            record["error"] = {"code": "REQUEUE_FAILED", "params": [], "message": exc.message}
            await self._storage.save_migrations([(record, request)])
            return
        # Keep one record: the old id now points at the re-queued migration.
        record.update(status="interrupted", finished=time.time())
        record["error"] = {
            "code": "SERVER_RESTARTED",
            "params": [m.id],
            "message": f"re-queued after a restart as migration {m.id}",
            "hint": "Nothing to do: the migration was queued again.",
        }
        await self._storage.save_migrations([(record, request)])

    async def _close_record(self, record: dict[str, Any], request: dict[str, Any]) -> None:
        """Its pool did not come back: close the record by where the VM is."""
        vm = self._store.get(record["vm"])
        arrived = vm is not None and vm.get("$container") == record.get("targetHost")
        record["finished"] = time.time()
        if arrived:
            record.update(status="success", progress=1.0, phase="done", eta=0.0, error=None)
        else:
            record.update(status="interrupted")
            record["error"] = {
                "code": "SERVER_RESTARTED",
                "params": [],
                "message": "the server restarted while this migration was running",
                "hint": "Check where the VM is now; start the migration again if needed.",
            }
        record.update(rate=None, queuePosition=None, waitingFor=None)
        await self._storage.save_migrations([(record, request)])
        self._store.set(record)


def plan_from_record(record: dict[str, Any], vm: XoObject | None) -> Plan:
    """A stand-in plan for an adopted migration, from its record: what it shows and what its
    progress needs. The record has the total bytes only; the VM's memory (when the VM is
    known) splits them, the rest counting as the disks (`vdi` empty: not real disks)."""
    storage_motion = record.get("mode") == "migrate_send"
    total = int(record.get("bytesTotal") or 0)
    vm_memory = vm_memory_needed(vm or {})
    memory = min(total, vm_memory) if storage_motion else total
    disk_bytes = total - memory if storage_motion else 0
    disks = (
        [
            DiskPlan(
                vdi="",
                name="",
                device="",
                snapshot=False,
                sr_from=None,
                sr_to="",
                reason=RECORDED_PLAN_REASON,
                virtual_size=disk_bytes,
                allocated=disk_bytes,
                moves=True,
            )
        ]
        if disk_bytes
        else []
    )
    return Plan(
        mode=str(record.get("mode") or "pool_migrate"),
        mode_reason=RECORDED_PLAN_REASON,
        cross_pool=bool(record.get("crossPool")),
        vm=record["vm"],
        vm_name=str(record.get("vmName") or ""),
        vm_ref=str((vm or {}).get("_xapiRef") or ""),
        source_pool=record["sourcePool"],
        source_host=record.get("sourceHost"),
        target_pool=record["targetPool"],
        target_host=record["targetHost"],
        target_host_name=str(record.get("targetHostName") or ""),
        target_host_ref="",
        migration_network=record.get("migrationNetwork"),
        migration_network_reason=RECORDED_PLAN_REASON,
        disks=disks,
        memory={"needed": memory},
    )
