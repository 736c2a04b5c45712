"""RPC overhead: system.getServerVersion through the full pipeline vs a bare aiohttp responder.

Signed-in WebSocket clients (1 and 32, INFLIGHT calls in flight each) run in this process;
our server and the bare responder (orjson parse, answer inline, orjson serialize) each run in
their own child process, driven by the same client code in the same run.

    python -m bench.rpc
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
import orjson

from bench._common import (
    admin_token,
    cpu_seconds,
    http_session,
    percentile,
    raise_fd_limit,
    row,
    run_as_script,
)
from bench._proc import Child

CLIENTS = (1, 32)
INFLIGHT = 4
TRIALS = 3  # per side and client count, interleaved; the median rate is reported
WARMUP_S = 0.3
DURATION_S = 1.5
METHOD = "system.getServerVersion"


class _Window:
    def __init__(self) -> None:
        now = time.monotonic()
        self.start = now + WARMUP_S
        self.end = self.start + DURATION_S
        self.latencies: list[float] = []


async def _drive(ws: aiohttp.ClientWebSocketResponse, window: _Window) -> None:
    """Keep INFLIGHT requests outstanding on one socket until the window closes."""
    sent: dict[int, float] = {}
    next_id = 0
    now = time.monotonic

    async def send() -> None:
        nonlocal next_id
        next_id += 1
        sent[next_id] = now()
        await ws.send_str(f'{{"id":{next_id},"jsonrpc":"2.0","method":"{METHOD}"}}')

    for _ in range(INFLIGHT):
        await send()
    latencies = window.latencies
    while sent:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"unexpected frame {msg.type}")
        reply = orjson.loads(msg.data)
        if "result" not in reply:
            raise RuntimeError(f"call failed: {reply}")
        done = now()
        started = sent.pop(reply["id"])
        if window.start <= started and done <= window.end:
            latencies.append(done - started)
        if done < window.end:
            await send()


async def _open(
    http: aiohttp.ClientSession, url: str, n: int, token: str | None
) -> list[aiohttp.ClientWebSocketResponse]:
    sockets = []
    for _ in range(n):
        ws = await http.ws_connect(url, autoping=True)
        sockets.append(ws)
        if token is not None:
            await ws.send_str(
                orjson.dumps(
                    {"id": 0, "method": "session.signIn", "params": {"token": token}}
                ).decode()
            )
            reply = orjson.loads((await ws.receive()).data)
            if "result" not in reply:
                raise RuntimeError(f"sign-in failed: {reply}")
    return sockets


async def _trial(
    sockets: list[aiohttp.ClientWebSocketResponse], server_pid: int
) -> tuple[float, list[float], float]:
    """Calls/s, latencies (s) and the server's CPU seconds per call over one window."""
    window = _Window()
    drivers = asyncio.gather(*(_drive(ws, window) for ws in sockets))
    try:
        await asyncio.sleep(max(0.0, window.start - time.monotonic()))
        cpu0 = cpu_seconds(server_pid)
        await asyncio.sleep(max(0.0, window.end - time.monotonic()))
        cpu = cpu_seconds(server_pid) - cpu0
        await asyncio.wait_for(drivers, 60)
    finally:  # on any failure above the drivers are ours to stop
        drivers.cancel()
        await asyncio.gather(drivers, return_exceptions=True)
    calls = len(window.latencies)
    return calls / DURATION_S, window.latencies, cpu / max(1.0, calls)


async def _run() -> list[dict[str, Any]]:
    raise_fd_limit()
    rates: dict[tuple[str, int], list[float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    cpu_per_call: dict[tuple[str, int], list[float]] = {}
    async with (
        http_session() as http,
        Child("bench._services:ServerService") as ours,
        Child("bench._services:BareService") as bare,
    ):
        ours_url = f"ws://127.0.0.1:{ours.info['port']}/api/"
        token = await admin_token(http, ours_url)
        pids = {"ours": ours.pid, "bare": bare.pid}
        sockets = {
            "ours": await _open(http, ours_url, max(CLIENTS), token),
            "bare": await _open(
                http, f"ws://127.0.0.1:{bare.info['port']}/rpc", max(CLIENTS), None
            ),
        }
        try:
            # Interleaved trials: machine noise (other tenants, CPU frequency) hits both sides.
            for n in CLIENTS:
                for _ in range(TRIALS):
                    for side in ("ours", "bare"):
                        rate, lat, cpu = await _trial(sockets[side][:n], pids[side])
                        rates.setdefault((side, n), []).append(rate)
                        latencies.setdefault((side, n), []).extend(lat)
                        cpu_per_call.setdefault((side, n), []).append(cpu)
        finally:
            for ws in [*sockets["ours"], *sockets["bare"]]:
                await ws.close()
    rows = []
    for n in CLIENTS:
        ours_rate = statistics.median(rates["ours", n])
        bare_rate = statistics.median(rates["bare", n])
        ours_lat, bare_lat = latencies["ours", n], latencies["bare", n]
        tag = f"rpc {n} client{'s' if n > 1 else ''} x{INFLIGHT} in flight"
        rows += [
            row(f"{tag}: ours", ours_rate, "calls/s", digits=0),
            row(f"{tag}: bare aiohttp", bare_rate, "calls/s", digits=0),
            row(f"{tag}: ratio ours/bare", ours_rate / bare_rate, "x", 0.3 if n == 32 else None),
            row(f"{tag}: ours p50", percentile(ours_lat, 50) * 1000, "ms", digits=2),
            row(f"{tag}: ours p99", percentile(ours_lat, 99) * 1000, "ms", 50, "<=", digits=2),
            row(f"{tag}: bare p99", percentile(bare_lat, 99) * 1000, "ms", digits=2),
        ]
        if n == max(CLIENTS):
            ours_cpu = statistics.median(cpu_per_call["ours", n]) * 1e6
            bare_cpu = statistics.median(cpu_per_call["bare", n]) * 1e6
            rows += [
                row(f"{tag}: ours server CPU per call", ours_cpu, "us", digits=1),
                row(f"{tag}: bare server CPU per call", bare_cpu, "us", digits=1),
            ]
    return rows


def run() -> list[dict[str, Any]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    run_as_script(run)
