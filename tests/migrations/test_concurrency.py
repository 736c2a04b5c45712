"""Ten simultaneous storage migrations against the 3-per-pool limit, on a generated lab."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.migrations.service import MigrationSettings
from tests.migrations.conftest import Lab, lab_on
from xen.sim import Simulator, generate_lab

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def gen_lab(tmp_path: Path) -> AsyncIterator[Lab]:
    sim = Simulator(generate_lab(20, 2, hosts_per_pool=4, time_scale=0.005), port=0)
    await sim.start()
    try:
        async with lab_on(sim, tmp_path, MigrationSettings(retry_delay_s=0.2)) as lab:
            yield lab
    finally:
        await sim.stop()


async def test_ten_requests_never_run_more_than_three_per_pool_and_all_complete(
    gen_lab: Lab,
) -> None:
    lab = gen_lab
    watcher = await lab.connect()
    source_vms = [
        vm
        for vm in (await lab.objects(type="VM")).values()
        if vm["$pool"] == await _pool_id(lab, "Gen 1")
    ]
    assert len(source_vms) == 10
    target = await lab.id_of("host", "g2h1")
    states: dict[str, dict[str, Any]] = {}
    most_running = 0
    positions: set[int] = set()

    async def watch() -> None:
        nonlocal most_running
        while True:
            message = await watcher.next_notification(timeout=60)
            if message["params"]["type"] != "enter":
                continue
            for obj in message["params"]["items"].values():
                if obj.get("type") == "migration":
                    states[obj["id"]] = obj
                    if obj["queuePosition"]:
                        positions.add(obj["queuePosition"])
            running = sum(1 for s in states.values() if s["status"] == "running")
            most_running = max(most_running, running)
            if len(states) == 10 and all(s["status"] == "success" for s in states.values()):
                return

    watching = asyncio.create_task(watch())
    callers = [await lab.connect() for _ in range(10)]
    results = await asyncio.gather(
        *(
            c.call("vm.migrate", {"vm": vm["id"], "targetHost": target}, timeout=90)
            for c, vm in zip(callers, source_vms, strict=True)
        )
    )
    assert results == [True] * 10
    await asyncio.wait_for(watching, 30)
    assert most_running == 3
    assert max(positions) >= 5  # the line was visible, front to back
    for vm in source_vms:
        assert (await lab.get(vm["id"]))["$container"] == target


async def _pool_id(lab: Lab, name: str) -> str:
    return await lab.id_of("pool", name)
