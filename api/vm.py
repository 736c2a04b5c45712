"""vm.*: migrating VMs, with xo-server's `vm.migrate` contract and the 2014 `vm.migrate_pool`,
and what xo-web's VM pages ask (xo-server api/vm.mjs).

Both migrations run as a background task owned by the migration service
(server/migrations/service.py) and only await it: a client that disconnects does not stop the
migration, and `migration.getAll` shows it. The result is `true` once the VM has moved.

- `vm.stats {id, granularity?}`: xen/stats.py, from the host that runs the VM; a halted VM or a
  snapshot fails as in xo-server ("VM <id> is halted or host could not be found.").
- `vm.getSecurebootReadiness {id, forceRefresh}`: XAPI's `VM.get_secureboot_readiness`
  (`not_supported`, `disabled`, `first_boot`, `setup_mode`, `certs_incomplete`,
  `ready_no_dbx`, `ready`), reused for 30 s unless `forceRefresh`.
- `vm.getHaValues`: the values of a VM's high availability setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.registry import EACH_VALUE, OPTIONAL, Call, Method, ResolveSpec, XoParams
from api.xapi_call import connection_of
from server.migrations.plan import MigrationRequest
from server.migrations.service import MigrationService
from xen.stats import object_stats

SECUREBOOT_MEMO_S = 30.0
HA_VALUES = ["best-effort", "restart", ""]


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
    m = await migrations.start(
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


class StatsParams(XoParams):
    id: str
    granularity: str = OPTIONAL


class VmHaltedError(Exception):
    """A plain error, as xo-server throws it: admins read the message."""


async def stats(call: Call, params: StatsParams) -> dict[str, Any]:
    vm = call.objects["vm"]
    host = call.state.store.get(vm.get("$container") or "")
    if host is None or host["type"] != "host":  # not resident on a host
        raise VmHaltedError(f"VM {vm['uuid']} is halted or host could not be found.")
    return await object_stats(connection_of(call, vm), host, vm["uuid"], params.granularity)


class SecureBootParams(XoParams):
    id: str
    forceRefresh: bool = False


async def get_secureboot_readiness(call: Call, params: SecureBootParams) -> Any:
    vm = call.objects["vm"]
    return await connection_of(call, vm).call_cached(
        SECUREBOOT_MEMO_S,
        "VM.get_secureboot_readiness",
        vm["_xapiRef"],
        refresh=params.forceRefresh,
    )


def get_ha_values(call: Call, params: XoParams) -> list[str]:
    return list(HA_VALUES)


# xo-server's: `administrate` on the VM, the target host, the migration network and every SR
# and network the maps name. Beyond xo-server, `sr` (which it only looks up) needs `view`: a
# user cannot send disks to an SR it cannot see (xo-web only offers those).
MIGRATE_RESOLVE: ResolveSpec = {
    "vm": ("vm", "VM"),
    "host": ("targetHost", "host"),
    "migrationNetwork": ("migrationNetwork", "network"),
    "sr": ("sr", "SR", "view"),
    "mapVdisSrs": ("mapVdisSrs", "SR", "administrate", EACH_VALUE),
    "mapVifsNetworks": ("mapVifsNetworks", "network", "administrate", EACH_VALUE),
}

METHODS = [
    Method(
        "vm.stats",
        stats,
        StatsParams,
        resolve={"vm": ("id", ("VM", "VM-snapshot"), "view")},
        description="returns statistics about the VM",
    ),
    Method(
        "vm.getSecurebootReadiness",
        get_secureboot_readiness,
        SecureBootParams,
        resolve={"vm": ("id", "VM", "view")},
    ),
    Method("vm.getHaValues", get_ha_values),
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
