"""host.*: xo-server's host methods (xo-server api/host.mjs and the xapi mixins).

`host.setMaintenanceMode {id, maintenance, vmsToForceMigrate?}` has xo-server's contract
(server/migrations/maintenance.py): `true` disables the host and moves its running VMs to the
other hosts of its pool, all or nothing (on failure the host is enabled again and the error is
XAPI's, e.g. "operation blocked" for a VM whose migration is blocked, which xo-web answers by
calling again with that VM in `vmsToForceMigrate`); `false` enables the host. The evacuation
runs as a batch (type `migrationBatch`), visible while it runs, and goes on if the caller
disconnects.

What xo-web's host pages ask:

- `host.isHostServerTimeConsistent {host}`: the host's clock (`host.get_servertime`) within
  30 s of ours; the shift is measured at most once a minute per host.
- `host.getMdadmHealth {id}`: the `raid.py` plugin's `check_raid_pool`, parsed (`{}` without
  software RAID), null when the host lacks the plugin or the function.
- `host.getBiosInfo {id}`: xo-server only answers for 2CRSI servers, after downloading the
  vendor's latest BIOS versions; xo-migrate downloads nothing, so it answers as xo-server does
  for every other host: nothing (`true` on the wire).
- `host.getSchedulerGranularity {id}`: `host.get_sched_gran`; null where XAPI lacks it.
- `host.getSmartctlHealth {id}`: the `smartctl.py` plugin's `health`, parsed; null without it.
- `host.isHyperThreadingEnabled {id}`: `cpu_info.threads_per_core > 1` where XAPI gives it
  (XCP-ng 8.3), else the `hyperthreading.py` plugin's answer (not "false"); null without it.
- `host.stats {host, granularity?}`: xen/stats.py.

Objects are resolved with xo-server's permissions ("view", or "administrate" for
getBiosInfo and isHyperThreadingEnabled), which a non-admin holds through its ACLs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from api.registry import NULL, OPTIONAL, Call, Method, XoParams
from api.xapi_call import connection_of, plugin_answer_or_none
from server.migrations.maintenance import HostMaintenance
from xen.errors import XapiError
from xen.stats import object_stats
from xen.wire import datetime_to_seconds

SERVER_TIME_TOLERANCE_MS = 30_000
SERVER_TIME_MEMO_S = 60.0  # xo-server debounces the clock shift per host for a minute


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


class HostParams(XoParams):
    host: str


class IdParams(XoParams):
    id: str


class StatsParams(XoParams):
    host: str
    granularity: str = OPTIONAL


async def is_host_server_time_consistent(call: Call, params: HostParams) -> bool:
    host = call.objects["host"]
    conn = connection_of(call, host)

    async def shift_ms() -> float:
        server_time = await conn.call("host.get_servertime", host["_xapiRef"])
        return abs((datetime_to_seconds(server_time) or 0) * 1000 - time.time() * 1000)

    key = ("servertime_shift", host["_xapiRef"])
    return await conn.memo.get(key, SERVER_TIME_MEMO_S, shift_ms) < SERVER_TIME_TOLERANCE_MS


async def _call_plugin(call: Call, plugin: str, function: str) -> Any:
    """The host plugin's answer (a string), or NULL without the plugin or the function."""
    host = call.objects["host"]
    try:
        return await connection_of(call, host).call(
            "host.call_plugin", host["_xapiRef"], plugin, function, {}
        )
    except XapiError as exc:
        if plugin_answer_or_none(exc):
            return NULL
        raise


async def get_mdadm_health(call: Call, params: IdParams) -> Any:
    answer = await _call_plugin(call, "raid.py", "check_raid_pool")
    return answer if answer is NULL else json.loads(answer)


async def get_smartctl_health(call: Call, params: IdParams) -> Any:
    answer = await _call_plugin(call, "smartctl.py", "health")
    return answer if answer is NULL else json.loads(answer)


async def is_hyper_threading_enabled(call: Call, params: IdParams) -> Any:
    threads = (call.objects["host"].get("CPUs") or {}).get("threads_per_core")
    if threads is not None:
        return int(threads) > 1
    answer = await _call_plugin(call, "hyperthreading.py", "get_hyperthreading")
    return answer if answer is NULL else answer != "false"


def get_bios_info(call: Call, params: IdParams) -> None:
    return None


async def get_scheduler_granularity(call: Call, params: IdParams) -> Any:
    host = call.objects["host"]
    try:
        return await connection_of(call, host).call("host.get_sched_gran", host["_xapiRef"])
    except XapiError as exc:
        if exc.code == "MESSAGE_METHOD_UNKNOWN":  # XCP-ng >= 8.2 only
            return NULL
        raise


async def stats(call: Call, params: StatsParams) -> dict[str, Any]:
    host = call.objects["host"]
    return await object_stats(connection_of(call, host), host, host["uuid"], params.granularity)


METHODS = [
    Method(
        "host.setMaintenanceMode",
        set_maintenance_mode,
        MaintenanceParams,
        # Admins only (xo-server: `administrate` on the host): the evacuation places VMs on
        # any host of the pool, which the caller's ACLs need not cover.
        permission="admin",
        resolve={"host": ("id", "host")},
        description="manage the maintenance mode",
    ),
    Method(
        "host.isHostServerTimeConsistent",
        is_host_server_time_consistent,
        HostParams,
        resolve={"host": ("host", "host", "view")},
    ),
    Method(
        "host.getMdadmHealth",
        get_mdadm_health,
        IdParams,
        resolve={"host": ("id", "host", "view")},
        description="get the mdadm RAID health of the host",
    ),
    Method(
        "host.getSmartctlHealth",
        get_smartctl_health,
        IdParams,
        resolve={"host": ("id", "host", "view")},
        description="get smartctl health status",
    ),
    Method(
        "host.isHyperThreadingEnabled",
        is_hyper_threading_enabled,
        IdParams,
        resolve={"host": ("id", "host", "administrate")},
        description="get hyper-threading information",
    ),
    Method(
        "host.getBiosInfo",
        get_bios_info,
        IdParams,
        resolve={"host": ("id", "host", "administrate")},
    ),
    Method(
        "host.getSchedulerGranularity",
        get_scheduler_granularity,
        IdParams,
        resolve={"host": ("id", "host", "view")},
        description="get the scheduler granularity of a host",
    ),
    Method(
        "host.stats",
        stats,
        StatsParams,
        resolve={"host": ("host", "host", "view")},
        description="returns statistic of the host",
    ),
]
