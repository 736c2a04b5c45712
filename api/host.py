"""host.*: xo-server's host methods.

`host.setMaintenanceMode {id, maintenance, vmsToForceMigrate?}` has xo-server's contract
(server/migrations/maintenance.py): `true` disables the host and moves its running VMs to the
other hosts of its pool, all or nothing (on failure the host is enabled again and the error is
XAPI's, e.g. "operation blocked" for a VM whose migration is blocked, which xo-web answers by
calling again with that VM in `vmsToForceMigrate`); `false` enables the host. The evacuation
runs as a batch (type `migrationBatch`), visible while it runs, and goes on if the caller
disconnects.
"""

from __future__ import annotations

from api.registry import OPTIONAL, Call, Method, XoParams
from server.migrations.maintenance import HostMaintenance


class MaintenanceParams(XoParams):
    id: str
    maintenance: bool
    vmsToForceMigrate: list[str] = OPTIONAL


async def set_maintenance_mode(call: Call, params: MaintenanceParams) -> None:
    maintenance: HostMaintenance = call.state.services["maintenance"]
    user = call.user
    await call.state.services["batches"].owned(
        maintenance.set_mode(
            call.objects["host"],
            params.maintenance,
            list(params.vmsToForceMigrate or []),
            user_id=user.id if user else None,
            user_email=user.email if user else None,
        ),
        f"maintenance-{params.id}",
    )


METHODS = [
    Method(
        "host.setMaintenanceMode",
        set_maintenance_mode,
        MaintenanceParams,
        resolve={"host": ("id", "host")},
        description="manage the maintenance mode",
    ),
]
