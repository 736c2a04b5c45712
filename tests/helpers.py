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


def serve_toml(manifest: dict[str, Any], data_dir: Any, port: int, *sections: str) -> str:
    """A config file for a `serve` process of the tests on the simulated lab's pools: its data
    dir and port, the tests' cheaper scrypt cost, `sections` (TOML lines), the pools."""
    lines = [
        f'data_dir = "{data_dir}"',
        "[http]",
        f"port = {port}",
        "[authentication]",
        "scrypt_n = 16384",
        *sections,
    ]
    for pool in manifest["pools"]:
        lines += [
            "[[pools]]",
            f'label = "{pool["name"]}"',
            f'url = "{pool["master"]}"',
            f'username = "{pool["username"]}"',
            f'password = "{pool["password"]}"',
        ]
    return "\n".join(lines) + "\n"


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


# -- the store, whichever it is (SQLite or Redis) -------------------------------------------


async def expire_tokens(state: Any, expiration: float, description: str | None = None) -> None:
    """Set the expiration (epoch seconds) of every token, or of those with `description`."""
    for rec in await state.storage.tokens_of():
        if description is None or rec.description == description:
            await state.storage.refresh_token(rec.hash, expiration, rec.description)


async def count_tokens(state: Any) -> int:
    return len(await state.storage.tokens_of())


async def admin_token(state: Any) -> str:
    """A new token of the default admin."""
    admin = await state.storage.user_by_email("admin@admin.net")
    assert admin is not None
    return str(await state.auth.create_token(admin))


async def stored_bytes(data_dir: Any) -> bytes:
    """Everything the store holds, as bytes (to check that no secret is stored in clear):
    the SQLite file, or every Redis value (tests.storage.DATABASE)."""
    from tests.storage import database_url

    url = database_url(data_dir)
    if not url:  # the file and its WAL, as a thief would copy them
        return b"".join(p.read_bytes() for p in sorted(data_dir.glob("xo-migrate.db*")))
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True)
    parts: list[str] = []
    try:
        async for key in client.scan_iter():
            kind = await client.type(key)
            if kind == "string":
                parts.append(await client.get(key))
            elif kind == "hash":
                parts += [x for kv in (await client.hgetall(key)).items() for x in kv]
            elif kind == "zset":
                parts += await client.zrange(key, 0, -1)
            elif kind == "set":
                parts += list(await client.smembers(key))
            elif kind == "list":
                parts += await client.lrange(key, 0, -1)
            parts.append(key)
    finally:
        await client.aclose()
    return "\n".join(parts).encode()
