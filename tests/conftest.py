"""Shared fixtures: an in-process XAPI simulator on loopback (default lab, fast time scale).

    async def test_x(sim, manifest):
        url = manifest["pools"][0]["master"]          # "http://127.0.1.1:PORT/"
        session = XenAPI.Session(url)                 # blocking: call it via asyncio.to_thread
        pool_a = sim.pool("Pool A")                   # SimPool: .db, hooks, stats()

At SIM_TIME_SCALE a simulated second lasts 2 ms (the login-failure delay is 10 ms); a test
needing wider windows sets `sim.timing.time_scale` itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from xen.sim import Simulator, load_lab

SIM_TIME_SCALE = 0.002


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(load_lab(), port=0, time_scale=SIM_TIME_SCALE)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
def manifest(sim: Simulator) -> dict[str, Any]:
    return sim.manifest()
