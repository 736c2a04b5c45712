"""Timed faults from the lab file's [[faults]]: master failover, host offline or disabled at a
time T, slow logins, seen through the official XenAPI package."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import XenAPI

from tests.conftest import SIM_TIME_SCALE
from xen.sim import Simulator, load_lab
from xen.sim.registry import Fault


@pytest.fixture
async def faulty_sim() -> AsyncIterator[Simulator]:
    lab = load_lab()
    lab.faults += [
        Fault("master_failover", pool="Pool A", host="a2", at_s=5),
        Fault("host_disabled", pool="Pool A", host="a3", at_s=5),
        Fault("host_offline", pool="Pool B", host="b2", at_s=5),
        Fault("login_slow", pool="Pool B", delay_s=150),
    ]
    sim = Simulator(lab, port=0, time_scale=SIM_TIME_SCALE)  # 5 simulated s = 10 ms
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def login(url: str) -> XenAPI.Session:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", "password", "1.0", "test")
    return session


@pytest.mark.timeout(30)
async def test_timed_faults_happen_and_slow_logins_are_slow(faulty_sim: Simulator) -> None:
    await asyncio.sleep(0.3)  # well past T = 5 simulated seconds
    pools = {p["name"]: p for p in faulty_sim.manifest()["pools"]}
    port = faulty_sim.manifest()["port"]

    # Pool A's master moved to a2 (the manifest says so); a1 answers HOST_IS_SLAVE.
    assert pools["Pool A"]["master"] == f"http://127.0.1.2:{port}/"
    with pytest.raises(XenAPI.Failure) as info:
        await asyncio.to_thread(login, f"http://127.0.1.1:{port}/")
    assert info.value.details == ["HOST_IS_SLAVE", "127.0.1.2"]
    session = await asyncio.to_thread(login, f"http://127.0.1.2:{port}/")
    x = session.xenapi
    a3 = (await asyncio.to_thread(x.host.get_by_name_label, "a3"))[0]
    assert await asyncio.to_thread(x.host.get_enabled, a3) is False

    # Pool B: b2 went offline; every login there takes the injected delay (0.3 s real).
    started = time.monotonic()
    session_b = await asyncio.to_thread(login, pools["Pool B"]["master"])
    assert time.monotonic() - started >= 150 * SIM_TIME_SCALE
    xb = session_b.xenapi
    b2 = (await asyncio.to_thread(xb.host.get_by_name_label, "b2"))[0]
    metrics = await asyncio.to_thread(xb.host.get_metrics, b2)
    assert await asyncio.to_thread(xb.host_metrics.get_live, metrics) is False
