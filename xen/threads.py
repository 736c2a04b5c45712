"""A small bounded pool of daemon threads for blocking XenAPI calls, awaited from asyncio.

Why not `ThreadPoolExecutor`: its threads are joined at interpreter exit, so one thread stuck
in a 60 s `event.from` long-poll against a dead host would hold up shutdown; and each of our
threads owns per-thread state (its own XenAPI session) that must be cleaned up by that same
thread when the pool closes (`on_exit`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("xo_migrate.xen.threads")

_STOP = object()


class ThreadRunner:
    def __init__(
        self, name: str, max_threads: int, on_exit: Callable[[], None] | None = None
    ) -> None:
        self._name = name
        self._max = max(1, max_threads)
        self._on_exit = on_exit
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._waiting = 0  # threads blocked waiting for a job
        self._queued = 0  # jobs not yet taken by a thread
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in one of the threads; cancelling the await abandons the result."""
        if self._closed:
            raise RuntimeError(f"{self._name}: closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queued += 1
        self._jobs.put((loop, future, fn, args))
        self._maybe_spawn()
        return await future

    def _maybe_spawn(self) -> None:
        with self._lock:
            if self._queued <= self._waiting or len(self._threads) >= self._max:
                return
            thread = threading.Thread(
                target=self._worker, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _worker(self) -> None:
        try:
            with self._lock:
                self._waiting += 1
            while True:
                job = self._jobs.get()
                with self._lock:
                    self._waiting -= 1
                    if job is not _STOP:
                        self._queued -= 1
                if job is _STOP:
                    return
                loop, future, fn, args = job
                try:
                    result, error = fn(*args), None
                except BaseException as exc:
                    result, error = None, exc
                # Counted as waiting BEFORE the caller gets the result: the caller's next call
                # (often immediate) then reuses this thread instead of spawning another one,
                # which would log one more XAPI session in.
                with self._lock:
                    self._waiting += 1
                _deliver(loop, future, result, error)
        finally:
            if self._on_exit is not None:
                try:
                    self._on_exit()
                except Exception:
                    log.exception("event=thread_cleanup_failed runner=%s", self._name)

    def close(self) -> list[threading.Thread]:
        """Stop taking jobs; every thread exits after its current job (running `on_exit`)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(_STOP)
        return threads

    async def aclose(self, timeout: float) -> bool:
        """close() and wait up to `timeout` for the threads; True if all exited."""
        threads = self.close()

        def join_all() -> bool:
            deadline = time.monotonic() + timeout  # one budget for all, not one per thread
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            return not any(t.is_alive() for t in threads)

        if not threads:
            return True
        # A throwaway daemon thread does the joining so that a stuck thread never blocks
        # the loop or its default executor.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def joiner() -> None:
            _deliver(loop, done, join_all(), None)

        threading.Thread(target=joiner, name=f"{self._name}-join", daemon=True).start()
        return await done


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # loop closed: nobody is waiting any more
        pass
