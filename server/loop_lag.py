"""Event-loop lag: how late a periodic sleeper wakes up. A lag of tens of milliseconds means
something blocks the loop (a big synchronous serialization, a slow callback) and every client
waits that long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEFAULT_INTERVAL_S = 0.25


async def sample_loop_lag(
    observe: Callable[[float], None], interval_s: float = DEFAULT_INTERVAL_S
) -> None:
    """Forever: sleep `interval_s`, report how much longer than that it took. Run it as a task
    owned by whoever cancels it (server/metrics_http.py ties it to the app's lifespan)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - started - interval_s))
