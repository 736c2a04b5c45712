"""What a watching client sees: monotonic progress reaching 1 exactly at success, an ETA that
tells the truth, and XAPI calls that do not grow with the migration's duration."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.migrations.conftest import Lab
from tests.migrations.helpers import watch_migration

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(
    ("vm_name", "host_name"), [("web-02", "b1"), ("web-01", "a3"), ("app-01", "a3")]
)
async def test_pushed_progress_is_monotonic_and_reaches_one_exactly_at_success(
    lab: Lab, vm_name: str, host_name: str
) -> None:
    lab.sim.timing.time_scale = 0.02  # slow enough for every phase to be pushed
    watcher = await lab.connect()
    vm = await lab.id_of("VM", vm_name)
    host = await lab.id_of("host", host_name)
    watching = asyncio.create_task(watch_migration(watcher, vm))
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": host}) is True
    seen = [obj for _, obj in await watching]
    progress = [obj["progress"] for obj in seen]
    assert progress == sorted(progress), progress
    assert all(p < 1.0 for p, obj in zip(progress, seen, strict=True) if obj["status"] != "success")
    assert seen[-1]["status"] == "success" and seen[-1]["progress"] == 1.0
    assert seen[-1]["bytesDone"] == seen[-1]["bytesTotal"] > 0
    phases = [obj["phase"] for obj in seen]
    order = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    # Pushes sample the phases (changes are coalesced per flush), so a short one may be
    # skipped; the order never goes back and the copy phases are always seen.
    expected = ["preflight", "disks", "memory", "finishing", "done"]
    assert order == sorted(order, key=expected.index), order
    assert order[0] == "preflight" and order[-1] == "done" and "memory" in order
    assert ("disks" in order) == (seen[-1]["mode"] == "migrate_send")
    # The XAPI task was pushed too, and leaves the collection once destroyed.
    task_id = next(obj["xapiTask"] for obj in seen if obj["xapiTask"])

    async def task_gone() -> bool:
        return task_id not in await lab.objects(type="task")

    await wait_until(task_gone, timeout=5)


async def test_eta_tracks_the_truth_on_a_constant_rate_migration(lab: Lab) -> None:
    timing = lab.sim.timing
    # Constant rate: only the memory copy takes time (no setup nor tail phases).
    timing.dispatch_s = timing.memory_setup_s = timing.switch_s = timing.finalise_s = 0.0
    timing.progress_interval_s = 0.5
    timing.time_scale = 0.02  # big-mem: 40 GiB at 350 MB/s, ~2.5 s real
    watcher = await lab.connect()
    vm = await lab.id_of("VM", "big-mem")
    a2 = await lab.id_of("host", "a2")
    watching = asyncio.create_task(watch_migration(watcher, vm))
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": a2}) is True
    seen = await watching
    started = next(t for t, obj in seen if obj["phase"] == "memory")
    ended = next(t for t, obj in seen if obj["progress"] >= 0.99 or obj["status"] == "success")
    duration = ended - started
    assert duration > 1.0
    second_half = [
        (t, obj["eta"]) for t, obj in seen if started + duration / 2 <= t < ended and obj["eta"]
    ]
    assert len(second_half) >= 5
    for t, eta in second_half:
        truth = ended - t
        # 0.1 s: the event stream's batching (50 ms) plus the ETA's rounding.
        assert abs(eta - truth) <= 0.2 * truth + 0.1, (eta, truth)


async def count_calls(
    lab: Lab, vm: str, host_name: str, time_scale: float, **extra: Any
) -> dict[str, int]:
    lab.sim.timing.time_scale = time_scale
    params = {"vm": vm, "targetHost": await lab.id_of("host", host_name)}
    for key, name in extra.items():
        params[key] = await lab.id_of("SR", name)
    for pool in lab.sim.pools:
        pool.reset_stats()
    assert await lab.migrate("vm.migrate", params) is True
    calls: dict[str, int] = {}
    for pool in lab.sim.pools:
        for method, n in pool.stats().items():
            # The stream's long-polls and a worker thread's one-time login are the pool
            # connection's cost, not the migration's.
            if method not in ("event.from", "event_from", "session.login_with_password"):
                calls[method] = calls.get(method, 0) + n
    return calls


SCENARIOS = {
    "pool_migrate": ("web-01", ("a2", {}), ("a1", {})),
    "intra-pool storage motion": (
        "app-01",
        ("a3", {"sr": "A local a3"}),
        ("a2", {"sr": "A local a2"}),
    ),
    "cross-pool": ("web-02", ("b1", {}), ("a2", {})),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_xapi_calls_per_migration_do_not_grow_with_duration(lab: Lab, scenario: str) -> None:
    vm_name, (there, there_extra), (back, back_extra) = SCENARIOS[scenario]
    vm = await lab.id_of("VM", vm_name)
    fast = await count_calls(lab, vm, there, 0.001, **there_extra)
    slow = await count_calls(lab, vm, back, 0.01, **back_extra)
    assert fast == slow
    expected = 2 if scenario == "pool_migrate" else 5
    assert sum(fast.values()) == expected, fast
