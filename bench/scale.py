"""Scale: 200 concurrent migrations across 4 simulated pools, 200 signed-in clients watching.
(The initial sync of a 10,000-VM pool is bench/large_pools.py's.)

Three processes: the simulator (generated lab, child), our server (child; it measures its own
event-loop lag) and this one (the watching clients and the caller of the migrations). Server
memory is its resident set size, sampled here every 50 ms from /proc.

    python -m bench.scale
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench._common import (
    ADMIN,
    admin_token,
    close_all,
    connect,
    connect_many,
    http_session,
    raise_fd_limit,
    row,
    rss_kib,
    run_as_script,
)
from bench._proc import Child

POOLS = 4
VMS = 400  # 100 per pool, 25 per host: the first MIGRATIONS of them move
MIGRATIONS = 200
WATCHERS = 200
TIME_SCALE = 0.05  # one 1 GiB XenMotion: ~6.6 simulated s, ~0.33 real s


class _RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> _RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid))


async def _migrations() -> list[dict[str, Any]]:
    async with (
        http_session() as http,
        Child("bench._services:SimService", time_scale=TIME_SCALE, generate=[VMS, POOLS]) as sim,
        Child("bench._services:ServerService", pools=sim.info["pools"]) as server,
    ):
        await server.call("wait_pools")
        url = f"ws://127.0.0.1:{server.info['port']}/api/"
        control = await connect(http, url, ADMIN)
        token = await admin_token(http, url)
        watchers = await connect_many(http, url, WATCHERS, {"token": token})
        received = [0]

        def count(frame: str, data: dict[str, Any]) -> None:
            received[0] += 1

        try:
            for w in watchers:
                w.on_notification = count
            vms = await control.call("xo.getAllObjects", {"filter": {"type": "VM"}})
            hosts = await control.call("xo.getAllObjects", {"filter": {"type": "host"}})
            by_pool: dict[str, list[str]] = {}
            for h in sorted(hosts.values(), key=lambda h: h["name_label"]):
                by_pool.setdefault(h["$pool"], []).append(h["id"])
            moves = []
            chosen = sorted(
                (v for v in vms.values() if not v.get("is_a_template")),
                key=lambda v: v["name_label"],
            )[:MIGRATIONS]
            for vm in chosen:
                pool_hosts = by_pool[vm["$pool"]]
                here = pool_hosts.index(vm["$container"])
                moves.append(
                    {"vm": vm["id"], "targetHost": pool_hosts[(here + 1) % len(pool_hosts)]}
                )
            await asyncio.sleep(0.5)
            await server.call("lag_reset")
            before = await server.call("stats")
            async with _RssSampler(server.info["pid"]) as rss:
                start = time.monotonic()
                await asyncio.gather(*(control.call("vm.migrate", m, timeout=240) for m in moves))
                elapsed = time.monotonic() - start
                after = await server.call("stats")
            records = await control.call("migration.getAll", {"limit": MIGRATIONS})
            ok = sum(1 for r in records if r["status"] == "success")
            if ok != MIGRATIONS:
                raise RuntimeError(f"only {ok} of {MIGRATIONS} migrations succeeded")
        finally:
            await close_all([control, *watchers])
    tag = f"scale {MIGRATIONS} migrations, {POOLS} pools, {WATCHERS} watchers"
    print(
        f"{tag}: {received[0]} notifications received by the watchers, server RSS before "
        f"{before['rss_kib'] / 1024:.1f} MiB, lag max {after['lag_max_ms']:.1f} ms",
        file=sys.stderr,
    )
    return [
        row(f"{tag}: migrations/s", MIGRATIONS / elapsed, "1/s", digits=1),
        row(f"{tag}: event-loop lag p99", after["lag_p99_ms"], "ms", 50, "<=", digits=1),
        row(f"{tag}: server RSS peak", rss.peak_kib / 1024, "MiB", 250, "<=", digits=1),
    ]


async def _run() -> list[dict[str, Any]]:
    raise_fd_limit()
    return await _migrations()


def run() -> list[dict[str, Any]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    run_as_script(run)
