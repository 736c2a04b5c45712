"""Run a bench service in its own process, so load generator and server never share a core.

    async with Child("bench._services:ServerService", pools=[...]) as server:
        server.info              # what the service's start() returned (port, pid ...)
        await server.call("stats")

The child runs `asyncio.run` on the service: `start()` (its return value is sent back), then
each command received over a multiprocessing Pipe is awaited as `service.<command>(*args)`
and its result sent back, until "stop" (which awaits `service.stop()`). The Pipe is read by a
dedicated thread so the child's event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import multiprocessing.connection
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_CTX = multiprocessing.get_context("spawn")


def _child_main(target: str, kwargs: dict[str, Any], conn: Any) -> None:
    asyncio.run(_serve(target, kwargs, conn))


async def _serve(target: str, kwargs: dict[str, Any], conn: Any) -> None:
    module, _, name = target.partition(":")
    service = getattr(importlib.import_module(module), name)(**kwargs)
    loop = asyncio.get_running_loop()
    reader = ThreadPoolExecutor(1, thread_name_prefix="bench-pipe")
    try:
        try:
            conn.send(("ok", await service.start()))
        except Exception:
            conn.send(("error", traceback.format_exc()))
            return
        while True:
            try:
                command, args = await loop.run_in_executor(reader, conn.recv)
            except EOFError:  # the parent went away
                break
            if command == "stop":
                break
            try:
                conn.send(("ok", await getattr(service, command)(*args)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        try:
            await asyncio.wait_for(service.stop(), 20)
        finally:
            reader.shutdown(wait=False)
            conn.send(("ok", None))


class ChildError(RuntimeError):
    pass


class Child:
    def __init__(self, target: str, **kwargs: Any) -> None:
        self.target = target
        parent_end, child_end = _CTX.Pipe()
        self._conn = parent_end
        self._process = _CTX.Process(
            target=_child_main, args=(target, kwargs, child_end), daemon=True
        )
        self._child_end = child_end
        self.info: Any = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    async def _receive(self, timeout: float) -> Any:
        def wait() -> Any:
            if not self._conn.poll(timeout):
                raise TimeoutError(f"{self.target}: no answer within {timeout} s")
            return self._conn.recv()

        status, value = await asyncio.to_thread(wait)
        if status != "ok":
            raise ChildError(f"{self.target} failed:\n{value}")
        return value

    async def call(self, command: str, *args: Any, timeout: float = 120.0) -> Any:
        async with self._lock:
            self._conn.send((command, args))
            return await self._receive(timeout)

    async def __aenter__(self) -> Child:
        self._process.start()
        self._child_end.close()
        try:
            self.info = await self._receive(120.0)
        except BaseException:
            self._kill()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.call("stop", timeout=30.0)
        except Exception:
            pass
        await asyncio.to_thread(self._process.join, 10)
        self._kill()
        self._conn.close()

    def _kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
