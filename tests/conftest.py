"""Shared fixtures: an in-process XAPI simulator on loopback (default lab, fast time scale).

    async def test_x(sim, manifest):
        url = manifest["pools"][0]["master"]          # "http://127.0.1.1:PORT/"
        session = XenAPI.Session(url)                 # blocking: call it via asyncio.to_thread
        pool_a = sim.pool("Pool A")                   # SimPool: .db, hooks, stats()

At SIM_TIME_SCALE a simulated second lasts 2 ms (the login-failure delay is 10 ms); a test
needing wider windows sets `sim.timing.time_scale` itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.redis_server import REDIS_MISSING, flush, redis_server
from tests.storage import DATABASE, reset
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


# -- the store: the suites that touch it run on SQLite and on Redis --------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One redis-server for the session (emptied before each test that uses it)."""
    if REDIS_MISSING is not None:
        pytest.skip(REDIS_MISSING)
    with redis_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def storage_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The `[database] url` that tests.server.conftest.make_config gives every server built
    meanwhile: SQLite in the data dir, or an emptied Redis."""
    url = ""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        flush(url)
    DATABASE["url"] = url
    reset()
    try:
        yield request.param
    finally:
        DATABASE["url"] = ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `sqlite_only` (they check the SQLite file itself) or `any_store` (nothing
    they check depends on the store) run on SQLite alone."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_redis = callspec is not None and callspec.params.get("storage_backend") == "redis"
        once = item.get_closest_marker("sqlite_only") or item.get_closest_marker("any_store")
        (dropped if on_redis and once else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
