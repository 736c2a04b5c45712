"""Reading migrations the way a client does: records by id, the live one of a VM, pushes."""

from __future__ import annotations

import time
from typing import Any

from tests.helpers import wait_until
from tests.migrations.conftest import Lab
from tests.server.xo_client import XoClient


async def record(lab: Lab, migration_id: str) -> dict[str, Any]:
    return await lab.client.call("migration.get", {"id": migration_id})


async def wait_record(lab: Lab, migration_id: str, predicate: Any, timeout: float = 30) -> dict:
    async def check() -> dict | None:
        rec = await record(lab, migration_id)
        return rec if predicate(rec) else None

    return await wait_until(check, timeout=timeout)


async def active_for(lab: Lab, vm: str) -> dict | None:
    """The VM's queued or running migration, if any."""
    records = await lab.client.call("migration.getAll")
    return next(
        (r for r in records if r["vm"] == vm and r["status"] in ("queued", "running")), None
    )


async def watch_migration(
    watcher: XoClient, vm: str, timeout: float = 60
) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, migration object) of every pushed change of the VM's migration, until
    it ends."""
    seen: list[tuple[float, dict[str, Any]]] = []
    while True:
        message = await watcher.next_notification(timeout=timeout)
        params = message["params"]
        if message["method"] != "all" or params["type"] != "enter":
            continue
        for obj in params["items"].values():
            if obj.get("type") == "migration" and obj["vm"] == vm:
                seen.append((time.monotonic(), obj))
                if obj["status"] not in ("queued", "running"):
                    return seen


async def start_one_running_one_queued(lab: Lab, names: tuple[str, str], host: str) -> list[str]:
    """Start two storage migrations to `host` with one slot per source pool: the first runs
    (for seconds), the second waits in the queue. Their ids."""
    lab.server.state.services["migrations"].queue.per_pool = 1
    lab.sim.timing.time_scale = 0.02
    target = await lab.id_of("host", host)
    return [
        await lab.client.call(
            "migration.start", {"vm": await lab.id_of("VM", name), "targetHost": target}
        )
        for name in names
    ]
