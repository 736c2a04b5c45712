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
from server.migrations.history import MigrationHistory
from server.migrations.service import MigrationService


async def plan(call: Call, params: MigrateParams) -> dict[str, Any]:
    return await service(call).dry_run(params.request())


def start(call: Call, params: MigrateParams) -> str:
    user = call.user
    m = service(call).start(
        params.request(),
        method="migration.start",
        user_id=user.id if user else None,
        user_email=user.email if user else None,
    )
    return m.id


class IdParams(XoParams):
    id: str


def get(call: Call, params: IdParams) -> dict[str, Any]:
    return service(call).get(params.id)


class GetAllParams(XoParams):
    # Bounded: SQLite takes 64-bit integers only, and no history is longer than this.
    limit: Annotated[int, Field(ge=0, le=1_000_000)] = OPTIONAL


def get_all(call: Call, params: GetAllParams) -> list[dict[str, Any]]:
    return service(call).all(params.limit if params.limit is not None else 100)


async def cancel(call: Call, params: IdParams) -> dict[str, Any]:
    migrations = service(call)
    record = migrations.get(params.id)  # code 1 when unknown
    user = call.user
    # Anyone signed in may watch migrations (as xo.getAllObjects shows everything), but only
    # an admin or the user who started one may cancel it.
    if user is None or not (user.is_admin or record.get("user") == user.id):
        raise errors.unauthorized("administrate", params.id, "migration")
    return await migrations.cancel(params.id)


async def wait(call: Call, params: IdParams) -> dict[str, Any]:
    migrations = service(call)
    await migrations.wait(params.id)
    return migrations.get(params.id)


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
]


@contextlib.asynccontextmanager
async def lifespan(state: Any) -> AsyncIterator[None]:
    history = MigrationHistory(state.config.data_dir / "xo-migrate.db")
    migrations = MigrationService(state.store, state.pools, history, state.config.migration)
    state.services["migrations"] = migrations
    migrations.recover()
    try:
        yield
    finally:
        await migrations.aclose()
        history.close()
