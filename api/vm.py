"""vm.*: migrating VMs, with xo-server's `vm.migrate` contract and the 2014 `vm.migrate_pool`.

Both run the migration as a background task owned by the migration service
(server/migrations/service.py) and only await it: a client that disconnects does not stop the
migration, and `migration.getAll` shows it. The result is `true` once the VM has moved.
"""

from __future__ import annotations

from pydantic import Field

from api.registry import OPTIONAL, Call, Method, XoParams
from server.migrations.plan import MigrationRequest
from server.migrations.service import MigrationService


class MigrateParams(XoParams):
    vm: str
    force: bool = OPTIONAL
    targetHost: str
    sr: str = OPTIONAL
    mapVdisSrs: dict[str, str] = OPTIONAL
    mapVifsNetworks: dict[str, str] = OPTIONAL
    migrationNetwork: str = OPTIONAL
    bypassAssert: bool = Field(
        default=OPTIONAL,
        description="Bypass the verification asserting whether a VM can be migrated to the specified destination",
    )

    def request(self) -> MigrationRequest:
        return MigrationRequest(
            vm=self.vm,
            target_host=self.targetHost,
            force=bool(self.force),
            sr=self.sr,
            map_vdis_srs=dict(self.mapVdisSrs or {}),
            map_vifs_networks=dict(self.mapVifsNetworks or {}),
            migration_network=self.migrationNetwork,
            bypass_assert=bool(self.bypassAssert),
        )


class MigratePoolParams(XoParams):
    id: str
    target_host_id: str
    target_sr_id: str = OPTIONAL
    target_network_id: str = OPTIONAL
    migration_network_id: str = OPTIONAL

    def request(self) -> MigrationRequest:
        return MigrationRequest(
            vm=self.id,
            target_host=self.target_host_id,
            sr=self.target_sr_id,
            target_network=self.target_network_id,
            migration_network=self.migration_network_id,
            storage_motion=True,
        )


def service(call: Call) -> MigrationService:
    return call.state.services["migrations"]


async def run_and_wait(call: Call, req: MigrationRequest) -> None:
    migrations = service(call)
    user = call.user
    m = migrations.start(
        req,
        method=call.method.name,
        user_id=user.id if user else None,
        user_email=user.email if user else None,
    )
    await migrations.wait_result(m.id)


async def migrate(call: Call, params: MigrateParams) -> None:
    await run_and_wait(call, params.request())


async def migrate_pool(call: Call, params: MigratePoolParams) -> None:
    await run_and_wait(call, params.request())


MIGRATE_RESOLVE = {
    "vm": ("vm", "VM"),
    "host": ("targetHost", "host"),
    "migrationNetwork": ("migrationNetwork", "network"),
}

METHODS = [
    Method("vm.migrate", migrate, MigrateParams, resolve=MIGRATE_RESOLVE),
    Method(
        "vm.migrate_pool",
        migrate_pool,
        MigratePoolParams,
        resolve={
            "vm": ("id", "VM"),
            "host": ("target_host_id", "host"),
            "sr": ("target_sr_id", "SR"),
            "network": ("target_network_id", "network"),
            "migrationNetwork": ("migration_network_id", "network"),
        },
        description="Migrate a VM to a host of any pool with storage motion (disks, then "
        "memory). Defaults: the target pool's default SR, the target host's management "
        "network for network cards, that same network for the migration stream.",
    ),
]
