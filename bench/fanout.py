"""Push fan-out: one task progress change in the simulator -> `all` on 1,000 signed-in sockets.

The simulator (default lab) and the 1,000 clients live in this process; our server, connected
to Pool A, runs in a child process. Each round changes a task's progress in the simulator's
database and times the change until the LAST client has the `all` notification carrying it.
The physical limit, in the same run: a bare aiohttp server (child process) that, on a POST
from this process, writes the very frames our server sent to its 1,000 sockets.

The simulator, like xapi, holds an event.from answer 50 ms after a change so that a burst lands
in one batch: a cost of the pool master that no client avoids. The ratio is therefore measured
with that batching delay off (our server's own cost: XAPI answer -> parse -> store -> 1,000
sockets), and the end-to-end figures with it on are reported as well.

Mixed: the same 1,000 sockets, half of them admins and half non-admins (one user each) with
three ACL entries each: viewer on two VMs and on one host, the task's host for every other
user. A non-admin gets only what it may view (server/views.py), so each round goes to the 500
admins and the 250 users who see the task's host, and must reach nobody else; the ratio to
the all-admin figure is the cost of the per-user filtering.

    python -m bench.fanout
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench._common import (
    RpcClient,
    admin_token,
    close_all,
    connect,
    connect_many,
    http_session,
    percentile,
    raise_fd_limit,
    row,
    run_as_script,
)
from bench._proc import Child
from xen.sim import Simulator, load_lab

CLIENTS = 1000
ROUNDS = 30
PAUSE_S = 0.05  # between rounds: the pool's event.from long-poll is re-armed by then
ROUND_TIMEOUT_S = 10.0


MIXED_ADMINS = CLIENTS // 2


class _Round:
    """Arrival times of one round's frame on every client that must get it."""

    def __init__(self, n: int, marker: str) -> None:
        self.marker = marker
        self.remaining = n
        self.last = 0.0
        self.arrivals: list[float] = []
        self.frame: str | None = None
        self.done = asyncio.Event()

    def arrived(self, frame: str) -> None:
        now = time.monotonic()
        self.arrivals.append(now)
        self.frame = frame
        self.last = now
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


class _Listener:
    """Routes every client's notifications to the current round (by a marker in the frame);
    `strays` counts those that reached a client that must not see them."""

    def __init__(self) -> None:
        self.current: _Round | None = None
        self.strays = 0

    def __call__(self, frame: str, data: dict[str, Any]) -> None:
        current = self.current
        if current is not None and current.marker in frame:
            current.arrived(frame)

    def stray(self, frame: str, data: dict[str, Any]) -> None:
        current = self.current
        if current is not None and current.marker in frame:
            self.strays += 1


async def _rounds(
    listener: _Listener, db: Any, task_ref: str, first_round: int, receivers: int = CLIENTS
) -> tuple[list[float], list[float], list[str]]:
    """ROUNDS progress changes: (to last client, to first client) seconds; frames seen."""
    times, firsts, frames = [], [], []
    for i in range(first_round, first_round + ROUNDS):
        progress = round(i / (4 * ROUNDS + 1), 6)
        # The task object with this progress: unique to the round.
        current = listener.current = _Round(receivers, f'"progress":{progress}')
        await asyncio.sleep(PAUSE_S)
        start = time.monotonic()
        db.update("task", task_ref, progress=progress)
        await asyncio.wait_for(current.done.wait(), ROUND_TIMEOUT_S)
        times.append(current.last - start)
        firsts.append(current.arrivals[0] - start)
        assert current.frame is not None
        frames.append(current.frame)
    return times, firsts, frames


async def _ours(sim: Simulator, http: aiohttp.ClientSession) -> dict[str, Any]:
    """Two passes: the simulator's XAPI event batching (50 ms, as xapi) off, then on."""
    manifest = sim.manifest()
    pool_a = next(p for p in manifest["pools"] if p["name"] == "Pool A")
    sim_pool = sim.pool("Pool A")
    xapi_delay = sim_pool.event_batch_delay_s
    db = sim_pool.db
    task_ref = db.create(
        "task",
        name_label="bench fan-out",
        status="pending",
        created=datetime.now(UTC).replace(microsecond=0),
        resident_on=sim_pool.master_ref,  # a task is seen by those who see its host
    )
    out: dict[str, Any] = {"xapi_delay": xapi_delay}
    async with Child("bench._services:ServerService", pools=[pool_a]) as server:
        await server.call("wait_pools")
        url = f"ws://127.0.0.1:{server.info['port']}/api/"
        token = await admin_token(http, url)
        clients = await connect_many(http, url, CLIENTS, {"token": token})
        listener = _Listener()
        try:
            for c in clients:
                c.on_notification = listener
            sim_pool.event_batch_delay_s = 0.0
            out["server"] = await _rounds(listener, db, task_ref, 1)
            sim_pool.event_batch_delay_s = xapi_delay
            out["end_to_end"] = await _rounds(listener, db, task_ref, ROUNDS + 1)
        finally:
            await close_all(clients)
        sim_pool.event_batch_delay_s = 0.0
        try:
            out["mixed"] = await _mixed(server, http, url, token, db, task_ref)
        finally:
            sim_pool.event_batch_delay_s = xapi_delay
    return out


async def _mixed(
    server: Child, http: aiohttp.ClientSession, url: str, token: str, db: Any, task_ref: str
) -> tuple[list[float], int, int]:
    """Half admins, half non-admins with a few ACLs each: (to last client, receivers,
    frames that reached a non-admin that may not see the task)."""
    admin = await connect_many(http, url, 1, {"token": token})
    try:
        objects = await admin[0].call("xo.getAllObjects")
    finally:
        await close_all(admin)
    pool = next(o for o in objects.values() if o["type"] == "pool")
    hosts = sorted(o["id"] for o in objects.values() if o["type"] == "host")
    other_hosts = [h for h in hosts if h != pool["master"]]
    vms = sorted(o["id"] for o in objects.values() if o["type"] == "VM")
    grants = []
    for i in range(CLIENTS - MIXED_ADMINS):
        host = pool["master"] if i % 2 == 0 else other_hosts[i % len(other_hosts)]
        grants.append(
            [
                [vms[i % len(vms)], "viewer"],
                [vms[(i * 7 + 3) % len(vms)], "viewer"],
                [host, "viewer"],
            ]
        )
    tokens = await server.call("add_users", grants)
    listener = _Listener()
    clients = await connect_many(http, url, MIXED_ADMINS, {"token": token})
    try:
        for c in clients:
            c.on_notification = listener
        for i in range(0, len(tokens), 50):
            batch = await asyncio.gather(
                *(connect(http, url, {"token": t}) for t in tokens[i : i + 50])
            )
            for j, c in enumerate(batch):
                sees = grants[i + j][2][0] == pool["master"]
                c.on_notification = listener if sees else listener.stray
            clients += batch
        receivers = MIXED_ADMINS + sum(1 for g in grants if g[2][0] == pool["master"])
        times, _firsts, _frames = await _rounds(listener, db, task_ref, 2 * ROUNDS + 1, receivers)
    finally:
        await close_all(clients)
    return times, receivers, listener.strays


async def _bare(http: aiohttp.ClientSession, frames: list[str]) -> tuple[list[float], list[float]]:
    async with Child("bench._services:BareService") as bare:
        base = f"127.0.0.1:{bare.info['port']}"
        clients = [
            RpcClient(ws)
            for ws in await asyncio.gather(
                *(http.ws_connect(f"ws://{base}/fanout") for _ in range(CLIENTS))
            )
        ]
        listener = _Listener()
        try:
            for c in clients:
                c.on_notification = listener
            for _ in range(200):  # the server registers a socket just after the upgrade
                if (await bare.call("stats"))["sockets"] >= CLIENTS:
                    break
                await asyncio.sleep(0.05)
            times, firsts = [], []
            for frame in frames:
                current = listener.current = _Round(CLIENTS, frame)
                await asyncio.sleep(PAUSE_S)
                start = time.monotonic()
                async with http.post(f"http://{base}/broadcast", data=frame.encode()) as resp:
                    resp.raise_for_status()
                await asyncio.wait_for(current.done.wait(), ROUND_TIMEOUT_S)
                times.append(current.last - start)
                firsts.append(current.arrivals[0] - start)
        finally:
            await close_all(clients)
    return times, firsts


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


async def _run() -> list[dict[str, Any]]:
    raise_fd_limit()
    sim = Simulator(load_lab(), port=0, time_scale=0.02)
    await sim.start()
    try:
        async with http_session() as http:
            ours = await _ours(sim, http)
            bare, bare_first = await _bare(http, ours["server"][2])
    finally:
        await sim.stop()
    server, server_first, _ = ours["server"]
    e2e, e2e_first, _ = ours["end_to_end"]
    mixed, receivers, strays = ours["mixed"]
    delay_ms = ours["xapi_delay"] * 1000
    tag = f"fanout {CLIENTS} clients"
    mixed_tag = f"{tag}, {CLIENTS - MIXED_ADMINS} non-admins with 3 ACLs each"
    return [
        row(f"{tag}: bare p50 broadcast -> last client", _ms(bare, 50), "ms"),
        row(f"{tag}: bare p50 broadcast -> first client", _ms(bare_first, 50), "ms"),
        row(f"{tag}: ours p50 change -> last client", _ms(server, 50), "ms"),
        row(f"{tag}: ours p50 change -> first client", _ms(server_first, 50), "ms"),
        row(f"{tag}: ours p99 change -> last client", _ms(server, 99), "ms", 250, "<="),
        row(
            f"{tag}: ratio ours/bare (p50, last client)",
            _ms(server, 50) / _ms(bare, 50),
            "x",
            3,
            "<=",
        ),
        row(f"{tag}: with xapi's {delay_ms:.0f} ms event batching: p50", _ms(e2e, 50), "ms"),
        row(
            f"{tag}: with xapi's {delay_ms:.0f} ms event batching: p99",
            _ms(e2e, 99),
            "ms",
            250,
            "<=",
        ),
        row(
            f"{tag}: with xapi's {delay_ms:.0f} ms event batching: first p50",
            _ms(e2e_first, 50),
            "ms",
        ),
        row(f"{mixed_tag}: p50 change -> last of {receivers} viewers", _ms(mixed, 50), "ms"),
        row(f"{mixed_tag}: p99 change -> last viewer", _ms(mixed, 99), "ms", 250, "<="),
        row(
            f"{mixed_tag}: ratio to all admins (p50, last client)",
            _ms(mixed, 50) / _ms(server, 50),
            "x",
            1.5,
            "<=",
        ),
        row(
            f"{mixed_tag}: same ratio per socket served",
            (_ms(mixed, 50) / receivers) / (_ms(server, 50) / CLIENTS),
            "x",
        ),
        row(f"{mixed_tag}: frames to users who may not see them", strays, "frames", 0, "<="),
    ]


def run() -> list[dict[str, Any]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    run_as_script(run)
