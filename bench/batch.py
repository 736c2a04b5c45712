"""Batch: a 500-VM pool (4 hosts, 125 VMs each) evacuated host by host, as a rolling
maintenance does: `host.setMaintenanceMode` true (plan the whole evacuation with XAPI's
verdict on every (VM, host) pair, then move every VM through the queue), then false, for each
host in turn.

Figures: the planning time of each evacuation (measured by the server, `planningMs` of the
batch), the event-loop lag of the server while the batches run (its own monitor), and the
moves per second. A signed-in client watches every push meanwhile, as xo-web would.

    python -m bench.batch
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench._common import (
    ADMIN,
    close_all,
    connect,
    http_session,
    raise_fd_limit,
    row,
    run_as_script,
)
from bench._proc import Child

VMS = 500
HOSTS = 4  # generate_lab's default hosts per pool
TIME_SCALE = 0.002  # one 1 GiB XenMotion: ~6.6 simulated s, ~13 real ms


async def _run() -> list[dict[str, Any]]:
    raise_fd_limit()
    async with (
        http_session() as http,
        Child("bench._services:SimService", time_scale=TIME_SCALE, generate=[VMS, 1]) as sim,
        Child("bench._services:ServerService", pools=sim.info["pools"]) as server,
    ):
        await server.call("wait_pools")
        url = f"ws://127.0.0.1:{server.info['port']}/api/"
        control = await connect(http, url, ADMIN)
        watcher = await connect(http, url, ADMIN)
        pushes = [0]

        def count(frame: str, data: dict[str, Any]) -> None:
            pushes[0] += 1

        watcher.on_notification = count
        try:
            hosts = await control.call("xo.getAllObjects", {"filter": {"type": "host"}})
            order = sorted(hosts.values(), key=lambda h: h["name_label"])
            await asyncio.sleep(0.5)
            await server.call("lag_reset")
            planning: list[float] = []
            moved = 0
            start = time.monotonic()
            for host in order:
                await control.call(
                    "host.setMaintenanceMode", {"id": host["id"], "maintenance": True}, 300
                )
                batch = (await control.call("migration.batch.getAll", {"limit": 1}))[0]
                if batch["status"] != "success" or batch["host"] != host["id"]:
                    raise RuntimeError(f"evacuation of {host['name_label']}: {batch['status']}")
                planning.append(batch["planningMs"])
                moved += batch["totals"]["success"]
                await control.call(
                    "host.setMaintenanceMode", {"id": host["id"], "maintenance": False}
                )
                print(
                    f"batch: {host['name_label']} evacuated, {batch['totals']['success']} VMs, "
                    f"planned in {batch['planningMs']:.0f} ms",
                    file=sys.stderr,
                )
            elapsed = time.monotonic() - start
            stats = await server.call("stats")
        finally:
            await close_all([control, watcher])
    tag = f"batch {VMS}-VM pool, {HOSTS} hosts evacuated one by one"
    print(
        f"{tag}: {moved} moves in {elapsed:.1f} s, {pushes[0]} pushes to the watcher, "
        f"lag max {stats['lag_max_ms']:.1f} ms",
        file=sys.stderr,
    )
    return [
        row(f"{tag}: planning time per host, max", max(planning), "ms", 3000, "<=", digits=0),
        row(f"{tag}: planning time per host, mean", sum(planning) / len(planning), "ms", digits=0),
        row(f"{tag}: event-loop lag p99", stats["lag_p99_ms"], "ms", 50, "<=", digits=1),
        row(f"{tag}: VMs moved", moved, "moves", digits=0),
        row(f"{tag}: moves/s", moved / elapsed, "1/s", digits=1),
    ]


def run() -> list[dict[str, Any]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    run_as_script(run)
