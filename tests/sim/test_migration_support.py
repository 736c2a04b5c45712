"""Shared pieces of the migration conformance tests (no tests in here).

Everything is driven through the official XenAPI binding over real sockets; the binding
blocks, so every call runs in a worker thread. Lab state a test needs (a disabled host, a
missing PIF ...) is arranged through the in-process pool database before the calls.
"""

from __future__ import annotations

import asyncio
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any

import XenAPI

from tests.sim.helpers import PASSWORD, USER
from xen.sim import Simulator
from xen.sim.pool import SimPool

NULL = "OpaqueRef:NULL"


class Xapi:
    """One logged-in XenAPI session, used from worker threads one call at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: XenAPI.Session | None = None

    async def __aenter__(self) -> Xapi:
        def login() -> XenAPI.Session:
            session = XenAPI.Session(self.url)
            session.xenapi.login_with_password(USER, PASSWORD, "1.0", "migration-tests")
            return session

        self.session = await asyncio.to_thread(login)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            session = self.session
            await asyncio.to_thread(lambda: session.xenapi.session.logout())

    def _bound(self, method: str) -> Any:
        assert self.session is not None
        fn: Any = self.session.xenapi
        for part in method.split("."):
            fn = getattr(fn, part)
        return fn

    async def __call__(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self._bound(method), *args)

    async def fails(self, method: str, *args: Any) -> list[str]:
        """The ErrorDescription of a call that must fail."""
        try:
            await self(method, *args)
        except XenAPI.Failure as exc:
            return list(exc.details)
        raise AssertionError(f"{method} succeeded")

    async def wait(self, task: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll a task until it leaves `pending`; its final record."""
        deadline = time.monotonic() + timeout
        while True:
            rec: dict[str, Any] = await self("task.get_record", task)
            if rec["status"] != "pending":
                return rec
            assert time.monotonic() < deadline, f"task still pending: {rec}"
            await asyncio.sleep(0.01)

    async def wait_until(
        self, task: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll a pending task until predicate(record) holds."""
        deadline = time.monotonic() + timeout
        while True:
            rec: dict[str, Any] = await self("task.get_record", task)
            if predicate(rec):
                return rec
            assert rec["status"] == "pending", f"task ended first: {rec}"
            assert time.monotonic() < deadline, f"condition never met: {rec}"
            await asyncio.sleep(0.005)


def master(sim: Simulator, pool: str) -> str:
    return sim.pool(pool).master_url


def decode_result(result: str) -> Any:
    doc = f"<methodResponse><params><param>{result}</param></params></methodResponse>"
    return xmlrpc.client.loads(doc)[0][0]


# -- lab lookups (refs are what the wire returns, so tests may compare) ----------------------


def vm_ref(pool: SimPool, name: str) -> str:
    ref = pool.db.find_one("VM", name_label=name)
    assert ref is not None, name
    return ref


def host_ref(pool: SimPool, name: str) -> str:
    return pool.host_ref(name)


def sr_ref(pool: SimPool, name: str) -> str:
    ref = pool.db.find_one("SR", name_label=name)
    assert ref is not None, name
    return ref


def net_ref(pool: SimPool, name: str) -> str:
    ref = pool.db.find_one("network", name_label=name)
    assert ref is not None, name
    return ref


def disks_of(pool: SimPool, vm: str) -> list[str]:
    """VDIs of the VM's non-CD disks."""
    db = pool.db
    return [
        db.get("VBD", vbd)["VDI"]
        for vbd in db.get("VM", vm)["VBDs"]
        if db.get("VBD", vbd)["type"] == "Disk" and not db.get("VBD", vbd)["empty"]
    ]


def vifs_of(pool: SimPool, vm: str) -> list[str]:
    return list(pool.db.get("VM", vm)["VIFs"])


def memory_free(pool: SimPool, host: str) -> int:
    return int(pool.db.get("host_metrics", pool.db.get("host", host)["metrics"])["memory_free"])


async def receive(sim: Simulator, pool: str, host: str, network: str) -> dict[str, str]:
    """The `dest` map from the destination pool's host.migrate_receive, over the wire."""
    dst = sim.pool(pool)
    async with Xapi(master(sim, pool)) as x:
        dest: dict[str, str] = await x(
            "host.migrate_receive", host_ref(dst, host), net_ref(dst, network), {}
        )
    return dest
