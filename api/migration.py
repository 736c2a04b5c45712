"""migration.*: xo-migrate's own namespace: explained plans, a visible queue, cancel, history.

Each migration is also an object of type `migration` in the live collection, pushed through
`all` notifications while it lives (status, phase, monotonic progress, bytes, rate, ETA, queue
position, XAPI task, error with a hint) and kept in SQLite afterwards.

Who may do what (admins: everything):
- `migration.plan` needs `view` on the objects it names, `migration.start` what `vm.migrate`
  needs (`administrate` on the VM, the target host, the migration network, the SRs and
  networks of the maps);
- a migration is seen (`migration.get`, `.wait`, `.getAll`, the collection) by the user who
  started it and by those who may view its VM; it is cancelled by the user who started it or
  one who may administrate its VM;
- batches (`migration.batch`, `migration.evacuate`) are for admins: a batch places VMs on
  hosts of its choosing, which the caller's ACLs need not cover. A batch is seen and
  controlled by admins and by the user who started it;
- a migration or batch a user may not see gets the same answer as one that does not exist:
  code 2 naming it and the permission.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from pydantic import Field

from api.registry import OPTIONAL, Call, Method, ResolveSpec, XoParams
from api.vm import MIGRATE_RESOLVE, MigrateParams, service
from server import errors
from server.migrations.batches import BatchService
from server.migrations.connections import PoolConnections
from server.migrations.maintenance import HostMaintenance
from server.migrations.placement import MoveAsk, MoveOptions
from server.migrations.service import MigrationService
from server.storage.records import User
from xen.store import ObjectStore

# migration.plan changes nothing: seeing the objects it names is enough.
PLAN_RESOLVE: ResolveSpec = {
    key: (spec[0], spec[1], "view", *spec[3:]) for key, spec in MIGRATE_RESOLVE.items()
}


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


def _me(call: Call) -> User:
    user = call.user
    assert user is not None  # every method here needs a signed-in caller
    return user


async def seen_record(
    call: Call,
    lookup: Callable[[str], Awaitable[dict[str, Any]]],
    record_id: str,
    obj_type: str,
    permission: str,
) -> dict[str, Any]:
    """The record, for a caller who may see it; code 2 (`permission`) for one who may not,
    whether it exists or not. Admins get code 1 for an unknown id."""
    record = await call.state.views.record_for(_me(call), lookup, record_id, obj_type)
    if record is None:
        raise errors.unauthorized(permission, record_id, obj_type)
    return record


async def get(call: Call, params: IdParams) -> dict[str, Any]:
    return await seen_record(call, service(call).get, params.id, "migration", "view")


class GetAllParams(XoParams):
    # Bounded: SQLite takes 64-bit integers only, and no history is longer than this.
    limit: Annotated[int, Field(ge=0, le=1_000_000)] = OPTIONAL


# How many of the newest records a non-admin's listing looks through (the default history
# keeps 1000 migrations).
NON_ADMIN_SCAN = 1000


async def visible_records(
    call: Call, fetch: Callable[[int], Awaitable[list[dict[str, Any]]]], limit: int, obj_type: str
) -> list[dict[str, Any]]:
    """The `limit` newest records the caller may see."""
    if _me(call).is_admin:
        return await fetch(limit)
    views, user = call.state.views, _me(call)
    records = await fetch(max(limit, NON_ADMIN_SCAN))
    seen = [r for r in records if views.can_see_record(user, r, obj_type)]
    return seen[:limit]


async def get_all(call: Call, params: GetAllParams) -> list[dict[str, Any]]:
    limit = params.limit if params.limit is not None else 100
    return await visible_records(call, service(call).all, limit, "migration")


def admin_or_owner(call: Call, record: dict[str, Any], obj_type: str) -> None:
    """Only an admin or the user who started it may act on a batch."""
    user = _me(call)
    if not (user.is_admin or record.get("user") == user.id):
        raise errors.unauthorized("administrate", record["id"], obj_type)


async def cancel(call: Call, params: IdParams) -> dict[str, Any]:
    migrations = service(call)
    record = await seen_record(call, migrations.get, params.id, "migration", "administrate")
    if not call.state.views.can_cancel(_me(call), record):
        raise errors.unauthorized("administrate", params.id, "migration")
    return await migrations.cancel(params.id)


async def wait(call: Call, params: IdParams) -> dict[str, Any]:
    migrations = service(call)
    await seen_record(call, migrations.get, params.id, "migration", "view")
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
    return await seen_record(call, batches(call).get, params.id, "migrationBatch", "view")


async def batch_get_all(call: Call, params: GetAllParams) -> list[dict[str, Any]]:
    limit = params.limit if params.limit is not None else 50
    return await visible_records(call, batches(call).all, limit, "migrationBatch")


async def _may_control(call: Call, batch_id: str) -> None:
    record = await seen_record(call, batches(call).get, batch_id, "migrationBatch", "administrate")
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
    await seen_record(call, batches(call).get, params.id, "migrationBatch", "view")
    return await batches(call).wait(params.id)


METHODS = [
    Method(
        "migration.plan",
        plan,
        MigrateParams,
        resolve=PLAN_RESOLVE,
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
        permission="admin",
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
