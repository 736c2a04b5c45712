"""Large pools: a 10,000-VM pool synced from scratch, held, and kept current for 200 clients,
side by side with what the real xo-server 5.207.2 does on the same simulated pool (issue 16,
measured there on this machine: 6.5 s, 480 MiB 60 s after the sync, 1.6 KB per VM object,
15.7 MB for `getAllObjects {type: VM}`, 161 KB pushed per client for 100 renames, rename ->
last of 200 clients p99 230 ms).

The simulator and our server each run in a child process; the clients live here. Figures:
time from `server.add` to a complete cache, the server's CPU during it, its RSS peak and
after a quiet while, the size of one VM object and of every VM object as `xo.getAllObjects`
sends them, then 100 renames (one at a time) timed until the last of 200 signed-in clients has
the new name, with the bytes each client received, and the server's idle CPU. The renames run
twice: end to end, with the 50 ms that xapi (and the simulator) holds an event.from answer to
batch a burst, then without it, which is our own cost and the one with a target (as in
bench/fanout.py).

    python -m bench.large_pools              # 1 pool of 10,000 VMs (part of `make bench`)
    python -m bench.large_pools --pools 5    # 5 pools of 10,000 VMs: how cost grows with size
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from bench._common import (
    ADMIN,
    admin_token,
    close_all,
    connect,
    connect_many,
    cpu_seconds,
    http_session,
    percentile,
    raise_fd_limit,
    row,
    rss_kib,
    run_as_script,
)
from bench._proc import Child

VMS_PER_POOL = 10_000
CLIENTS = 200
RENAMES = 100
QUIET_S = 10.0  # before "RSS after" (xo-server's figure was taken 60 s after its sync)
IDLE_S = 10.0
TIME_SCALE = 0.01
SYNC_LAG_MAX_MS = 100  # the sync must not hold the event loop longer than this at once
# The real xo-server 5.207.2 on this machine, same simulated pool (issue 16).
XO_SERVER = {"sync_s": 6.5, "rss_after_mib": 480.0, "vm_bytes": 1600, "vms_mb": 15.7}


class _Peak:
    """RSS peak of a process, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.kib = max(self.kib, rss_kib(self.pid))
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> _Peak:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.kib = max(self.kib, rss_kib(self.pid))


async def _measure(pools: int) -> list[dict[str, Any]]:
    vms = VMS_PER_POOL * pools
    tag = f"large pools {pools}x{VMS_PER_POOL} VMs"
    async with (
        http_session() as http,
        Child("bench._services:SimService", time_scale=TIME_SCALE, generate=[vms, pools]) as sim,
        Child("bench._services:ServerService") as server,
    ):
        pid = server.info["pid"]
        cpu_before = cpu_seconds(pid)
        await server.call("lag_reset")
        async with _Peak(pid) as peak:
            started = time.monotonic()
            await asyncio.gather(*(server.call("add_pool", p, 600) for p in sim.info["pools"]))
            sync_s = time.monotonic() - started
        sync_cpu = cpu_seconds(pid) - cpu_before
        sync_lag = await server.call("stats")
        await asyncio.sleep(QUIET_S)
        rss_after = (await server.call("stats"))["rss_kib"] / 1024

        url = f"ws://127.0.0.1:{server.info['port']}/api/"
        control = await connect(http, url, ADMIN)
        raw = orjson.dumps(await control.call("xo.getAllObjects", {"filter": {"type": "VM"}}))
        listing = orjson.loads(raw)
        one_vm = len(orjson.dumps(next(iter(listing.values()))))
        first_pool = sim.info["pools"][0]["uuid"]  # renames happen in the first pool
        names = sorted(v["name_label"] for v in listing.values() if v["$pool"] == first_pool)
        names = names[:RENAMES]

        token = await admin_token(http, url)
        clients = await connect_many(http, url, CLIENTS, {"token": token})
        received = [0] * CLIENTS
        waiting: dict[str, tuple[list[int], asyncio.Event]] = {}

        def watcher(i: int) -> Any:
            def on(frame: str, data: dict[str, Any]) -> None:
                received[i] += len(frame)
                for marker, (left, done) in waiting.items():
                    if marker in frame:
                        left[0] -= 1
                        if left[0] == 0:
                            done.set()

            return on

        async def renames(tag: str) -> list[float]:
            latencies = []
            for n, name in enumerate(names):
                marker = f"{tag}-{n}"
                names[n] = marker  # its name from now on
                done = asyncio.Event()
                waiting[marker] = ([CLIENTS], done)
                start = time.monotonic()
                await sim.call("rename", 0, name, marker)
                await asyncio.wait_for(done.wait(), 30)
                latencies.append(time.monotonic() - start)
                del waiting[marker]
            return latencies

        try:
            for i, client in enumerate(clients):
                client.on_notification = watcher(i)
            await asyncio.sleep(1.0)
            for i in range(CLIENTS):
                received[i] = 0
            # End to end, with xapi's 50 ms event batching (the pool master's cost), then
            # without it: our own cost, XAPI's answer -> the last client (as bench/fanout.py).
            latencies = await renames("renamed")
            pushed_kb = sum(received) / CLIENTS / 1000
            await sim.call("set_event_batch_delay", 0.0)
            own = await renames("again")
            idle_before = cpu_seconds(pid)
            await asyncio.sleep(IDLE_S)
            idle_cpu = cpu_seconds(pid) - idle_before
        finally:
            await close_all([control, *clients])
    p99_ms = percentile(latencies, 99) * 1000
    own_p99_ms = percentile(own, 99) * 1000
    for what, values in (("with xapi's batching", latencies), ("without", own)):
        print(
            f"{tag}: rename -> last client {what}: p50 {percentile(values, 50) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms",
            file=sys.stderr,
        )
    rows = [
        row(f"{tag}: initial sync", sync_s, "s", digits=1),
        row(f"{tag}: server CPU during sync", sync_cpu, "s", digits=1),
        # Every client waits that long at worst while a pool syncs (it was 0.6-0.8 s).
        row(
            f"{tag}: event-loop lag max during sync",
            sync_lag["lag_max_ms"],
            "ms",
            SYNC_LAG_MAX_MS,
            "<=",
            digits=0,
        ),
        row(f"{tag}: server RSS peak", peak.kib / 1024, "MiB", digits=0),
        row(f"{tag}: server RSS {QUIET_S:.0f} s after sync", rss_after, "MiB", digits=0),
        row(f"{tag}: bytes of one VM object", one_vm, "B", digits=0),
        row(f"{tag}: getAllObjects type=VM", len(raw) / 1e6, "MB", digits=1),
        row(f"{tag}: pushed per client, {RENAMES} renames", pushed_kb, "KB", digits=0),
        row(f"{tag}: rename -> last of {CLIENTS} clients p99, end to end", p99_ms, "ms"),
        row(f"{tag}: rename -> last of {CLIENTS} clients p99, ours", own_p99_ms, "ms", 100, "<="),
        row(f"{tag}: idle CPU over {IDLE_S:.0f} s", idle_cpu, "s", digits=2),
    ]
    if pools == 1:  # the side-by-side ratios, on the scenario xo-server was measured on
        rows += [
            row(f"{tag}: sync time / xo-server's", sync_s / XO_SERVER["sync_s"], "x", 1, "<="),
            row(
                f"{tag}: RSS after / xo-server's",
                rss_after / XO_SERVER["rss_after_mib"],
                "x",
                1,
                "<=",
            ),
            row(f"{tag}: VM object / xo-server's", one_vm / XO_SERVER["vm_bytes"], "x"),
        ]
    return rows


def run(pools: int = 1) -> list[dict[str, Any]]:
    raise_fd_limit()
    return asyncio.run(_measure(pools))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pools", type=int, default=1, help="pools of 10,000 VMs each")
    args = parser.parse_args()
    run_as_script(lambda: run(args.pools))
