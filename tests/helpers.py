"""Helpers shared by several test packages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.02
) -> Any:
    """Poll the async `predicate` until it returns something truthy (returned);
    TimeoutError after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(interval)


async def slowest_answer_during(
    probe: Callable[[], Awaitable[Any]], work: Awaitable[T], interval: float = 0.005
) -> tuple[T, float]:
    """Run `work` while calling `probe` (another client's call) in a loop, at least once:
    (work's result, the slowest probe answer in seconds). A server that does expensive work
    on its event loop shows here as a slow answer."""
    task = asyncio.ensure_future(work)
    slowest = 0.0
    try:
        while True:
            started = time.monotonic()
            await probe()
            slowest = max(slowest, time.monotonic() - started)
            if task.done():
                break
            await asyncio.sleep(interval)
        return await task, slowest
    finally:
        if not task.done():
            task.cancel()
