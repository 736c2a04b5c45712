"""migration.*: xo-migrate's own namespace: explained plans, a visible queue, cancel, history.

Each migration is also an object of type `migration` in the live collection, pushed through
`all` notifications while it lives (status, phase, monotonic progress, bytes, rate, ETA, queue
position, XAPI task, error with a hint) and kept in SQLite afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import Field

from api.registry import OPTIONAL, Call, Method, XoParams
from api.vm import MIGRATE_RESOLVE, MigrateParams, service
from server import errors
from server.migrations.batches import BatchService
from server.migrations.connections import PoolConnections
from server.migrations.maintenance import HostMaintenance
from server.migrations.placement import MoveAsk, MoveOptions
from server.migrations.service import MigrationService
from xen.store import ObjectStore


async def plan(call: Call, params: MigrateParams) -> dict[str, Any]:
    return await service(call).dry_run(params.request())


async def start(call: Call, params: MigrateParams) -> str:
    user = call.user
    m = await service(call).start(
        params.request(),
        method="migration.start",
        user_id=user.id if user else None,
        user_email=user.email if user else None,
    )
    return m.id


class IdParams(XoParams):
    id: str


async def get(call: Call, params: IdParams) -> dict[str, Any]:
    return await service(call).get(params.id)


class GetAllParams(XoParams):
    # Bounded: SQLite takes 64-bit integers only, and no history is longer than this.
    limit: Annotated[int, Field(ge=0, le=1_000_000)] = OPTIONAL


async def get_all(call: Call, params: GetAllParams) -> list[dict[str, Any]]:
    return await service(call).all(params.limit if params.limit is not None else 100)


def admin_or_owner(call: Call, record: dict[str, Any], obj_type: str) -> None:
    """Anyone signed in may watch migrations and batches (as xo.getAllObjects shows
    everything), but only an admin or the user who started one may act on it."""
    user = call.user
    if user is None or not (user.is_admin or record.get("user") == user.id):
        raise errors.unauthorized("administrate", record["id"], obj_type)


async def cancel(call: Call, params: IdParams) -> dict[str, Any]:
    migrations = service(call)
    admin_or_owner(call, await migrations.get(params.id), "migration")  # code 1 when unknown
    return await migrations.cancel(params.id)


async def wait(call: Call, params: IdParams) -> dict[str, Any]:
    migrations = service(call)
    return await migrations.wait(params.id)


# -- batches ---------------------------------------------------------------------------------


def batches(call: Call) -> BatchService:
    return call.state.services["batches"]


class MoveParams(XoParams):
    vm: str
    targetHost: str = OPTIONAL
    force: bool = OPTIONAL
    sr: str = OPTIONAL
    mapVdisSrs: dict[str, str] = OPTIONAL
    mapVifsNetworks: dict[str, str] = OPTIONAL
    migrationNetwork: str = OPTIONAL
    bypassAssert: bool = OPTIONAL

    def ask(self, target_pool: str | None) -> MoveAsk:
        options = MoveOptions(
            force=bool(self.force),
            sr=self.sr,
            map_vdis_srs=dict(self.mapVdisSrs or {}),
            map_vifs_networks=dict(self.mapVifsNetworks or {}),
            migration_network=self.migrationNetwork,
            bypass_assert=bool(self.bypassAssert),
        )
        return MoveAsk(self.vm, self.targetHost, target_pool, options=options)


class BatchParams(XoParams):
    moves: list[MoveParams] = Field(min_length=1)
    targetPool: str = OPTIONAL
    dryRun: bool = OPTIONAL
    stopOnError: bool = OPTIONAL


def _need(store: ObjectStore, obj_id: str | None, xo_type: str) -> None:
    obj = store.get(obj_id) if obj_id else None
    if obj_id is not None and (obj is None or obj.get("type") != xo_type):
        raise errors.no_such_object(obj_id, xo_type)


async def batch(call: Call, params: BatchParams) -> dict[str, Any]:
    store = call.state.store
    _need(store, params.targetPool, "pool")
    seen: set[str] = set()
    for i, move in enumerate(params.moves):
        if move.vm in seen:
            raise errors.invalid_parameters(
                [{"path": f"moves[{i}].vm", "message": f"VM {move.vm} is moved twice"}]
            )
        seen.add(move.vm)
        _need(store, move.vm, "VM")
        _need(store, move.targetHost, "host")
        _need(store, move.sr, "SR")
        _need(store, move.migrationNetwork, "network")
    user = call.user
    return await batches(call).create(
        "batch",
        [m.ask(params.targetPool) for m in params.moves],
        method="migration.batch",
        user_id=user.id if user else None,
        user_email=user.email if user else None,
        target_pool=params.targetPool,
        stop_on_error=bool(params.stopOnError),
        dry_run=bool(params.dryRun),
    )


class EvacuateParams(XoParams):
    host: str
    targetPool: str = OPTIONAL
    targets: list[str] = OPTIONAL
    dryRun: bool = OPTIONAL
    stopOnError: bool = OPTIONAL


async def evacuate(call: Call, params: EvacuateParams) -> dict[str, Any]:
    store = call.state.store
    for target in params.targets or []:
        _need(store, target, "host")
    service = batches(call)
    user = call.user
    return await service.create(
        "evacuate",
        service.evacuation_asks(params.host, params.targetPool, params.targets),
        method="migration.evacuate",
        user_id=user.id if user else None,
        user_email=user.email if user else None,
        host=params.host,
        target_pool=params.targetPool,
        stop_on_error=bool(params.stopOnError),
        dry_run=bool(params.dryRun),
    )


async def batch_get(call: Call, params: IdParams) -> dict[str, Any]:
    return await batches(call).get(params.id)


async def batch_get_all(call: Call, params: GetAllParams) -> list[dict[str, Any]]:
    return await batches(call).all(params.limit if params.limit is not None else 50)


async def _may_control(call: Call, batch_id: str) -> None:
    record = await batches(call).get(batch_id)  # code 1 when unknown
    admin_or_owner(call, record, "migrationBatch")


async def batch_pause(call: Call, params: IdParams) -> dict[str, Any]:
    await _may_control(call, params.id)
    return await batches(call).pause(params.id)


async def batch_resume(call: Call, params: IdParams) -> dict[str, Any]:
    await _may_control(call, params.id)
    return await batches(call).resume(params.id)


async def batch_cancel(call: Call, params: IdParams) -> dict[str, Any]:
    await _may_control(call, params.id)
    return await batches(call).cancel(params.id)


async def batch_wait(call: Call, params: IdParams) -> dict[str, Any]:
    return await batches(call).wait(params.id)


METHODS = [
    Method(
        "migration.plan",
        plan,
        MigrateParams,
        resolve=MIGRATE_RESOLVE,
        description="Dry run of vm.migrate: the mode, every disk's target SR and every network "
        "card's network with the reason each was chosen, bytes to move, free space, the memory "
        "check and XAPI's VM.assert_can_migrate verdict. Changes nothing.",
    ),
    Method(
        "migration.start",
        start,
        MigrateParams,
        resolve=MIGRATE_RESOLVE,
        description="Start a migration (same params as vm.migrate) and return its id at once.",
    ),
    Method("migration.get", get, IdParams, description="One migration, live or from history."),
    Method(
        "migration.getAll",
        get_all,
        GetAllParams,
        description="Live migrations and recent history, newest first.",
    ),
    Method(
        "migration.cancel",
        cancel,
        IdParams,
        description="Cancel a migration: a queued one leaves the queue; a running one is "
        "cancelled in XAPI if it is still cancellable; the result says whether it was.",
    ),
    Method(
        "migration.wait",
        wait,
        IdParams,
        description="Wait until a migration has finished and return its record.",
    ),
    Method(
        "migration.evacuate",
        evacuate,
        EvacuateParams,
        resolve={"host": ("host", "host"), "pool": ("targetPool", "pool")},
        description="Move every running VM off a host: to the other hosts of its pool, or to "
        "the hosts of targetPool (within targets if given). Plans every VM first (target "
        "host, SRs, networks, and why; the VMs that cannot go, and why), then runs the moves "
        "through the queue as a batch (type migrationBatch). dryRun: the plan only.",
    ),
    Method(
        "migration.batch",
        batch,
        BatchParams,
        permission="admin",
        description="Move many VMs as one batch: each move {vm, targetHost?, ...vm.migrate "
        "options}, placed on a host of targetPool (else of its own pool) when targetHost is "
        "not given. Planned as a whole before anything moves, then run through the queue. "
        "stopOnError: a failed move drops the queued ones. dryRun: the plan only.",
    ),
    Method("migration.batch.get", batch_get, IdParams, description="One batch."),
    Method(
        "migration.batch.getAll",
        batch_get_all,
        GetAllParams,
        description="Live batches and recent ones, newest first.",
    ),
    Method(
        "migration.batch.pause",
        batch_pause,
        IdParams,
        description="No new move of the batch starts until it is resumed; running ones go on.",
    ),
    Method("migration.batch.resume", batch_resume, IdParams, description="Resume a batch."),
    Method(
        "migration.batch.cancel",
        batch_cancel,
        IdParams,
        description="Cancel a batch: its queued moves are dropped, its running ones cancelled "
        "in XAPI where still possible; the answer says how each went.",
    ),
    Method(
        "migration.batch.wait",
        batch_wait,
        IdParams,
        description="Wait until a batch has finished and return it.",
    ),
]


@contextlib.asynccontextmanager
async def lifespan(state: Any) -> AsyncIterator[None]:
    settings = state.config.migration
    cluster = state.cluster
    queue = cluster.admission_queue(settings) if cluster is not None else None
    migrations = MigrationService(state.store, state.pools, state.storage, settings, queue)
    connections = PoolConnections(state.pools, settings)
    batch_service = BatchService(state.store, migrations, state.storage, connections, settings)
    state.services["migrations"] = migrations
    state.services["batches"] = batch_service
    state.services["maintenance"] = HostMaintenance(
        state.store, connections, batch_service, settings
    )
    if cluster is not None:  # owns the migrations this instance leases, adopts orphans
        await cluster.follow_migrations(migrations)
    else:
        await migrations.recover()
    await batch_service.recover()
    try:
        yield
    finally:
        await batch_service.aclose()
        if cluster is not None:  # stops the service and gives its leases up
            await cluster.unfollow_migrations(migrations)
        await migrations.aclose()
