"""Simulator throughput: calls/s, event.from long-poll concurrency, a 10,000-VM lab.

    python bench/sim_throughput.py            # prints a table
    from bench.sim_throughput import run      # rows {name, value, unit, target?, ok?}

Clients are raw XML-RPC over aiohttp (the blocking XenAPI binding would measure threads).
"""

from __future__ import annotations

import asyncio
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, cast

import aiohttp

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import row, rss_kib, run_as_script
from xen.sim import Simulator, generate_lab, load_lab

CALLERS = 50
DURATION_S = 2.0
LONG_POLLS = 50
BIG_LAB_VMS = 10_000


def _body(method: str, *params: Any) -> bytes:
    return xmlrpc.client.dumps(params, method, allow_none=True).encode()


async def _call(http: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    async with http.post(url, data=_body(method, *params)) as resp:
        reply = cast(dict[str, Any], xmlrpc.client.loads(await resp.read())[0][0])
    if reply["Status"] != "Success":
        raise RuntimeError(reply["ErrorDescription"])
    return reply["Value"]


async def _throughput(url: str, http: aiohttp.ClientSession, session: str, method: str) -> float:
    done = 0
    deadline = time.monotonic() + DURATION_S

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await _call(http, url, method, session)
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CALLERS)))
    return done / (time.monotonic() - start)


async def _default_lab_rows() -> list[dict[str, Any]]:
    rows = []
    sim = Simulator(load_lab(), time_scale=0.01)
    await sim.start()
    try:
        url = sim.manifest()["pools"][0]["master"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            session = await _call(http, url, "session.login_with_password", "root", "password")
            rate = await _throughput(url, http, session, "VM.get_all_records")
            rows.append(row("sim VM.get_all_records (50 callers)", rate, "calls/s", 50))
            rate = await _throughput(url, http, session, "host.get_all")
            rows.append(row("sim host.get_all (50 callers)", rate, "calls/s", 300))

            token = (await _call(http, url, "event.from", session, ["pool"], "", 0.0))["token"]
            # The group owns the long-polls: a failure below cancels and awaits them.
            async with asyncio.TaskGroup() as polls:
                for _ in range(LONG_POLLS):
                    polls.create_task(
                        _call(http, url, "event.from", session, ["pool"], token, 30.0)
                    )
                await asyncio.sleep(0.3)
                rate = await _throughput(url, http, session, "host.get_all")
                rows.append(row("sim host.get_all during 50 long-polls", rate, "calls/s", 300))
                (pool,) = await _call(http, url, "pool.get_all", session)
                start = time.monotonic()
                await _call(http, url, "pool.set_name_description", session, pool, "bench")
            wake_ms = (time.monotonic() - start) * 1000
            rows.append(row("sim 50 event.from wake-up", wake_ms, "ms", 1000, op="<="))
    finally:
        await sim.stop()
    return rows


async def _big_lab_rows(n_vms: int) -> list[dict[str, Any]]:
    rss0 = rss_kib() / 1024
    start = time.monotonic()
    sim = Simulator(generate_lab(n_vms, 1), time_scale=0.01)
    load_s = time.monotonic() - start
    rss = rss_kib() / 1024 - rss0
    await sim.start()
    try:
        url = sim.manifest()["pools"][0]["master"]
        async with aiohttp.ClientSession() as http:
            session = await _call(http, url, "session.login_with_password", "root", "password")
            start = time.monotonic()
            batch = await _call(http, url, "event.from", session, ["*"], "", 0.0)
            sync_s = time.monotonic() - start
            start = time.monotonic()
            records = await _call(http, url, "VM.get_all_records", session)
            records_s = time.monotonic() - start
        assert len(records) >= n_vms and len(batch["events"]) > n_vms
    finally:
        await sim.stop()
    return [
        row(f"sim {n_vms} VM lab load", load_s, "s", 30, op="<="),
        row(f"sim {n_vms} VM lab memory", rss, "MiB", 2048, op="<="),
        row(f"sim {n_vms} VM lab event.from '' sync", sync_s, "s", 30, op="<="),
        row(f"sim {n_vms} VM lab VM.get_all_records", records_s, "s", 10, op="<="),
    ]


async def _run(n_vms: int) -> list[dict[str, Any]]:
    return [*(await _default_lab_rows()), *(await _big_lab_rows(n_vms))]


def run(n_vms: int = BIG_LAB_VMS) -> list[dict[str, Any]]:
    return asyncio.run(_run(n_vms))


if __name__ == "__main__":
    run_as_script(run)
