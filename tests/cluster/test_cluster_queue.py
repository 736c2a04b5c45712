"""Issue 15: the admission queue's per-pool limit holds across three instances together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.cluster.conftest import ids_by_name
from xen.sim import Simulator, generate_lab

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """Two generated pools of 4 hosts, 12 VMs in each: room for 12 storage migrations."""
    simulator = Simulator(generate_lab(24, 2, hosts_per_pool=4, time_scale=0.01), port=0)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_twelve_storage_migrations_over_three_instances_respect_the_pool_limit(
    sim: Simulator, instances: Any
) -> None:
    trio = await instances(3)
    clients = [await instance.client() for instance in trio]
    ids = await ids_by_name(clients[0])
    vms = await clients[0].call("xo.getAllObjects", {"filter": {"type": "VM"}})
    gen1 = [o["id"] for o in vms.values() if o["$pool"] == ids["Gen 1"]]
    assert len(gen1) == 12
    pool = sim.pool("Gen 1")
    most = 0
    done = asyncio.Event()

    async def count_xapi_storage_migrations() -> None:
        nonlocal most
        while not done.is_set():
            pending = sum(
                1
                for task in pool.db.table("task").values()
                if "migrate_send" in task["name_label"] and task["status"] == "pending"
            )
            most = max(most, pending)
            await asyncio.sleep(0.005)

    counting = asyncio.create_task(count_xapi_storage_migrations())
    try:
        started = await asyncio.gather(
            *(
                clients[i % 3].call("migration.start", {"vm": vm, "targetHost": ids["g2h1"]})
                for i, vm in enumerate(gen1)
            )
        )
        finals = await asyncio.gather(
            *(
                clients[(i + 1) % 3].call("migration.wait", {"id": m}, timeout=150)
                for i, m in enumerate(started)
            )
        )
    finally:
        done.set()
        await counting
    assert [f["status"] for f in finals] == ["success"] * 12, finals
    assert 1 <= most <= 3, most  # the limit held, across the instances together
