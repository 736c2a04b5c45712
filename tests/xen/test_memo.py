"""The TTL memo behind xo-server's short caches (xen/memo.py)."""

from __future__ import annotations

import asyncio

import pytest

from xen.memo import TtlMemo


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_answers_are_reused_until_they_expire_and_failures_are_not() -> None:
    clock = Clock()
    memo = TtlMemo(clock=clock)
    calls: list[int] = []

    async def produce() -> int:
        calls.append(1)
        return len(calls)

    assert await memo.get("k", 30, produce) == 1
    clock.now = 29.9
    assert await memo.get("k", 30, produce) == 1
    clock.now = 30.0
    assert await memo.get("k", 30, produce) == 2
    memo.forget("k")
    assert await memo.get("k", 30, produce) == 3

    async def fail() -> int:
        calls.append(1)
        raise RuntimeError("XAPI said no")

    with pytest.raises(RuntimeError):
        await memo.get("bad", 30, fail)
    with pytest.raises(RuntimeError):
        await memo.get("bad", 30, fail)  # asked again: a failure is not memoized
    assert len(calls) == 5


async def test_concurrent_askers_share_one_computation() -> None:
    memo = TtlMemo()
    started = 0
    gate = asyncio.Event()

    async def slow() -> str:
        nonlocal started
        started += 1
        await gate.wait()
        return "answer"

    askers = [asyncio.create_task(memo.get("k", 5, slow)) for _ in range(5)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*askers) == ["answer"] * 5
    assert started == 1


async def test_expired_entries_are_swept_and_the_size_is_bounded() -> None:
    clock = Clock()
    memo = TtlMemo(max_entries=20, clock=clock)

    async def value() -> bytes:
        return b"x" * 1000

    for n in range(16):
        await memo.get(n, 1, value)
    clock.now = 2  # all expired: the next store sweeps them
    await memo.get("fresh", 10, value)
    assert len(memo) == 1
    for n in range(40):
        await memo.get(("many", n), 10, value)
    assert len(memo) == 20
