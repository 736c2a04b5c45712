"""Helpers for the batch tests: labs of our own, a sampler of XAPI's host memory, reading
batches the way a client does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.helpers import wait_until
from tests.migrations.conftest import Lab
from tests.server.xo_client import XoClient
from xen.sim import Simulator
from xen.sim.lab import Lab as SimLab
from xen.sim.lab import parse_lab

GIB = 1024**3


@contextlib.asynccontextmanager
async def simulator(lab: SimLab, time_scale: float = 0.002) -> AsyncIterator[Simulator]:
    sim = Simulator(lab, port=0, time_scale=time_scale)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def two_host_pool(small_gib: float, vms: list[tuple[str, float]]) -> SimLab:
    """One pool: `big` (32 GiB, master) running `vms` (name, GiB) on shared storage, and
    `small` (`small_gib`); both with the same CPU."""
    return parse_lab(
        {
            "pools": [
                {
                    "name": "Pool P",
                    "default_sr": "P shared",
                    "hosts": [
                        {"name": "big", "address": "127.0.3.1", "master": True, "memory_gib": 32},
                        {"name": "small", "address": "127.0.3.2", "memory_gib": small_gib},
                    ],
                    "srs": [{"name": "P shared", "type": "nfs", "shared": True, "size_gib": 512}],
                    "networks": [
                        {"name": "P management", "device": "eth0", "management": True},
                    ],
                    "vms": [
                        {
                            "name": name,
                            "host": "big",
                            "power_state": "Running",
                            "memory_gib": gib,
                            "disks": [{"sr": "P shared", "size_gib": 8, "used_gib": 2}],
                        }
                        for name, gib in vms
                    ],
                }
            ]
        }
    )


def host_commitments(sim: Simulator) -> dict[str, tuple[int, int]]:
    """Per host name, XAPI's own figures: (memory committed, memory_total). Committed is the
    host's overhead plus every VM resident on it or arriving (scheduled_to_be_resident_on),
    as XAPI counts them."""
    out: dict[str, tuple[int, int]] = {}
    for pool in sim.pools:
        db = pool.db
        vms = db.table("VM")
        for ref, host in db.table("host").items():
            total = int(db.get("host_metrics", host["metrics"])["memory_total"])
            used = int(host["memory_overhead"])
            for vm in vms.values():
                if vm["resident_on"] == ref:
                    used += int(vm["memory_target"]) + int(vm["memory_overhead"])
                elif vm["scheduled_to_be_resident_on"] == ref:
                    used += int(vm["memory_dynamic_min"]) + int(vm["memory_overhead"])
            out[host["name_label"]] = (used, total)
    return out


@dataclass
class MemorySampler:
    """Samples XAPI's host memory while a batch runs; `worst` is the highest committed/total
    ratio seen per host, `free` the lowest memory_free XAPI reported."""

    sim: Simulator
    interval: float = 0.003
    samples: int = 0
    worst: dict[str, float] = field(default_factory=dict)
    free: dict[str, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, (used, total) in host_commitments(self.sim).items():
                self.worst[name] = max(self.worst.get(name, 0.0), used / total)
            for pool in self.sim.pools:
                for host in pool.db.table("host").values():
                    free = int(pool.db.get("host_metrics", host["metrics"])["memory_free"])
                    name = host["name_label"]
                    self.free[name] = min(self.free.get(name, free), free)
            self.samples += 1
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> MemorySampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def assert_never_overcommitted(self) -> None:
        assert self.samples > 5, self.samples
        over = {name: ratio for name, ratio in self.worst.items() if ratio > 1.0}
        assert not over, f"hosts overcommitted at some moment: {over}"
        assert min(self.free.values()) >= 0


async def batch_of(lab: Lab, batch_id: str) -> dict[str, Any]:
    return await lab.client.call("migration.batch.get", {"id": batch_id})


async def wait_batch(lab: Lab, batch_id: str, predicate: Any, timeout: float = 30) -> dict:
    async def check() -> dict | None:
        batch = await batch_of(lab, batch_id)
        return batch if predicate(batch) else None

    return await wait_until(check, timeout=timeout)


async def running_vms_on(lab: Lab, host_id: str) -> list[str]:
    vms = await lab.objects(type="VM")
    return sorted(
        v["name_label"]
        for v in vms.values()
        if v.get("$container") == host_id and v.get("power_state") == "Running"
    )


async def entered(watcher: XoClient, timeout: float = 10) -> list[dict[str, Any]]:
    """The objects of the next `all` notification that adds or updates objects."""
    while True:
        message = await watcher.next_notification(timeout=timeout)
        params = message["params"]
        if message["method"] == "all" and params["type"] == "enter":
            return list(params["items"].values())


def moves_by_name(batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["vmName"]: m for m in batch["moves"]}
