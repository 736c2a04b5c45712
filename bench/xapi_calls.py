"""XAPI economy: calls each migration costs the pool masters, counted by the simulator.

Three migrations of the default lab (intra-pool pool_migrate, intra-pool storage motion,
cross-pool), each run at two time scales (migration durations 4x apart) on a fresh simulator
(this process) and server (child process). Counts come from SimPool.stats() of both pools.
The pool connection's own `event.from` long-polls are reported separately: they follow the
event flow (and so the duration), everything else must not.

    python -m bench.xapi_calls
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from bench._common import ADMIN, RpcClient, connect, http_session, row, run_as_script
from bench._proc import Child
from xen.sim import Simulator, load_lab

TIME_SCALES = (0.004, 0.016)
MAX_CALLS = 8  # what xo-server makes for the same migrations (about 5 to 8)
SETTLE_S = 0.5  # after a migration returns: let trailing calls (task.destroy ...) land

# (label, method, VM name, target host name, expected `mode`)
MIGRATIONS = (
    ("intra-pool pool_migrate", "vm.migrate", "web-01", "a2", "pool_migrate"),
    ("intra-pool storage motion", "vm.migrate", "app-01", "a3", "migrate_send"),
    ("cross-pool", "vm.migrate_pool", "web-02", "b1", "migrate_send"),
)
# Run first, not counted: the pool connections log their worker sessions in lazily (once per
# worker thread, a connection cost and not a migration cost); these warm them up.
WARM_UP = (
    ("warm-up pool_migrate", "vm.migrate", "runner-01", "a3", "pool_migrate"),
    ("warm-up storage motion", "vm.migrate", "app-02", "a2", "migrate_send"),
    ("warm-up cross-pool", "vm.migrate_pool", "runner-02", "b1", "migrate_send"),
)


async def _ids(client: RpcClient, xo_type: str) -> dict[str, str]:
    objects = await client.call("xo.getAllObjects", {"filter": {"type": xo_type}})
    return {o["name_label"]: o["id"] for o in objects.values()}


def _total(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for per_pool in stats.values():
        for method, n in per_pool.items():
            out[method] = out.get(method, 0) + n
    return out


async def _one_scale(time_scale: float) -> dict[str, dict[str, Any]]:
    sim = Simulator(load_lab(), port=0, time_scale=time_scale)
    await sim.start()
    results: dict[str, dict[str, Any]] = {}
    try:
        pools = sim.manifest()["pools"]
        async with (
            http_session() as http,
            Child("bench._services:ServerService", pools=pools) as server,
        ):
            await server.call("wait_pools")
            client = await connect(http, f"ws://127.0.0.1:{server.info['port']}/api/", ADMIN)
            try:
                vms, hosts = await _ids(client, "VM"), await _ids(client, "host")
                logins = 0
                for label, method, vm, host, mode in WARM_UP + MIGRATIONS:
                    await asyncio.sleep(SETTLE_S)
                    for p in sim.pools:
                        p.reset_stats()
                    if method == "vm.migrate":
                        params = {"vm": vms[vm], "targetHost": hosts[host]}
                    else:
                        params = {"id": vms[vm], "target_host_id": hosts[host]}
                    await client.call(method, params, timeout=120)
                    await asyncio.sleep(SETTLE_S)
                    calls = _total({p.name: p.stats() for p in sim.pools})
                    record = next(
                        r for r in await client.call("migration.getAll") if r["vm"] == vms[vm]
                    )
                    if record["mode"] != mode or record["status"] != "success":
                        raise RuntimeError(f"{label}: unexpected migration record {record}")
                    events = calls.pop("event.from", 0)
                    results[label] = {"calls": calls, "events": events}
                    logins += calls.get("session.login_with_password", 0)
                results["logins"] = {"n": logins}
            finally:
                await client.close()
    finally:
        await sim.stop()
    return results


async def _run() -> list[dict[str, Any]]:
    by_scale = [await _one_scale(scale) for scale in TIME_SCALES]
    rows = []
    for label, *_ in MIGRATIONS:
        counts = [sum(r[label]["calls"].values()) for r in by_scale]
        same = all(r[label]["calls"] == by_scale[0][label]["calls"] for r in by_scale)
        for scale, r, n in zip(TIME_SCALES, by_scale, counts, strict=True):
            tag = f"xapi {label} @x{scale}"
            rows.append(row(f"{tag}: calls (no event.from)", n, "calls", MAX_CALLS, "<="))
            rows.append(row(f"{tag}: event.from (reported apart)", r[label]["events"], "calls"))
        rows.append(row(f"xapi {label}: same calls at both durations", int(same), "bool", 1))
        if not same:
            print(f"{label}: {[r[label]['calls'] for r in by_scale]}", file=sys.stderr)
    rows.append(
        row(
            f"xapi worker session logins over {len(WARM_UP) + len(MIGRATIONS)} migrations",
            max(r["logins"]["n"] for r in by_scale),
            "calls",
        )
    )
    print(
        "xapi calls by method: "
        + "; ".join(f"{label}: {by_scale[0][label]['calls']}" for label, *_ in MIGRATIONS),
        file=sys.stderr,
    )
    return rows


def run() -> list[dict[str, Any]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    run_as_script(run)
