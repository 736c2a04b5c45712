"""One simulated pool: its database, sessions, task runner, faults, counters and test hooks.

`SimPool` implements `registry.PoolLike` for behaviours, and the control hooks client tests
use (failover, reachability, session expiry, host offline, call counters).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from xen.sim.build import PoolBuilder
from xen.sim.db import Database, XapiFailure
from xen.sim.dispatch import Dispatcher, MethodTable
from xen.sim.ids import IdSource
from xen.sim.lab import Lab, PoolSpec
from xen.sim.registry import Fault, Timing
from xen.sim.rrd.activity import ActivityLog
from xen.sim.sessions import SessionStore
from xen.sim.tasks import COMPLETED_TASK_TIMEOUT_S, TaskRunner

if TYPE_CHECKING:
    from xen.sim.simulator import Simulator

log = logging.getLogger(__name__)


class SimPool:
    def __init__(
        self,
        sim: Simulator,
        lab: Lab,
        spec: PoolSpec,
        timing: Timing,
        table: MethodTable,
        seed: int | None = None,
    ) -> None:
        self.sim = sim
        self.spec = spec
        self.name = spec.name
        self.timing = timing
        self.event_batch_delay_s = lab.event_batch_delay_s
        self.faults: list[Fault] = [f for f in lab.faults if f.pool in ("", spec.name)]
        ids = IdSource(seed, spec.name)  # one stream per pool: pools do not shift each other
        builder = PoolBuilder(lab, spec, Database(schema=table.schema, ids=ids))
        self.db: Database = builder.build()
        self.ref = builder.pool_ref
        self.uuid: str = self.db.get("pool", self.ref)["uuid"]
        self.hosts: dict[str, str] = dict(builder.hosts)  # name -> ref
        # Packages each host's updater plugin reports (host ref -> packages).
        self.updates: dict[str, list[dict[str, Any]]] = {
            builder.hosts[h.name]: [dict(u) for u in h.updates] for h in spec.hosts
        }
        self.activity = ActivityLog()  # migration traffic, for the hosts' stats
        self.sessions = SessionStore(self)
        self.tasks = TaskRunner(self)
        self.dispatcher = Dispatcher(self, table)
        self.calls: Counter[str] = Counter()
        self.closing = False
        self.reachable = True
        self._background: set[asyncio.Task[Any]] = set()

    # -- PoolLike -----------------------------------------------------------------------

    @property
    def master_ref(self) -> str:
        return self.db.get("pool", self.ref)["master"]

    def host_address(self, host_ref: str) -> str:
        return self.db.get("host", host_ref)["address"]

    def base_url(self, address: str) -> str:
        return f"{self.sim.scheme}://{address}:{self.sim.port}"

    @property
    def master_url(self) -> str:
        return self.base_url(self.host_address(self.master_ref)) + "/"

    def create_session(self, username: str) -> str:
        return self.sessions.create(username or self.spec.username)

    def session_valid(self, session_ref: str) -> bool:
        return self.sessions.valid(session_ref)

    def find_fault(self, kind: str, **match: str) -> Fault | None:
        """The first fault of `kind` whose fields equal `match` (empty fields match all)."""
        for fault in self.faults:
            if fault.kind != kind:
                continue
            if all(getattr(fault, k, "") in ("", v) for k, v in match.items()):
                return fault
        return None

    # -- addresses ----------------------------------------------------------------------

    def host_ref(self, name: str) -> str:
        try:
            return self.hosts[name]
        except KeyError:
            for ref, rec in self.db.table("host").items():
                if name in (rec["uuid"], rec["address"]):
                    return ref
            raise KeyError(f"no host {name!r} in {self.name}") from None

    def host_addresses(self) -> dict[str, str]:
        """Management address -> host ref."""
        return {rec["address"]: ref for ref, rec in self.db.table("host").items()}

    def all_ips(self) -> set[str]:
        """Every address of the pool's hosts: management and any PIF IP (migration net)."""
        ips = set(self.host_addresses())
        for rec in self.db.table("PIF").values():
            if rec["IP"]:
                ips.add(rec["IP"])
        return ips

    # -- counters -----------------------------------------------------------------------

    def count(self, method: str) -> None:
        self.calls[method] += 1

    def stats(self) -> dict[str, int]:
        return dict(self.calls)

    def reset_stats(self) -> None:
        self.calls.clear()

    # -- test / fault hooks ---------------------------------------------------------------

    def failover(self, new_master_name: str) -> None:
        """`new_master_name` becomes master; the old one answers HOST_IS_SLAVE [new address]."""
        new = self.host_ref(new_master_name)
        self.db.update("pool", self.ref, master=new)
        log.info("event=failover pool=%s new_master=%s", self.name, new_master_name)

    def set_reachable(self, reachable: bool) -> None:
        """False: every host of the pool refuses connections (and drops open ones)."""
        self.reachable = reachable
        for address in self.host_addresses():
            host = self.host_addresses()[address]
            online = self.db.get("host_metrics", self.db.get("host", host)["metrics"])["live"]
            self.sim.set_listening(address, reachable and online)

    def expire_sessions(self) -> None:
        """Every existing session becomes SESSION_INVALID."""
        self.sessions.expire_all()

    def set_host_offline(self, name: str, offline: bool = True) -> None:
        """The host goes dead (host_metrics.live = false, connections refused) or comes back."""
        ref = self.host_ref(name)
        metrics = self.db.get("host", ref)["metrics"]
        self.db.update("host_metrics", metrics, live=not offline)
        self.sim.set_listening(self.host_address(ref), self.reachable and not offline)

    def set_host_enabled(self, name: str, enabled: bool) -> None:
        self.db.update("host", self.host_ref(name), enabled=enabled)

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.closing = False
        self._spawn(self._gc_loop())
        if self.timing.pool_heartbeat_s > 0:
            self._spawn(self._heartbeat_loop())
        for fault in self.faults:
            if fault.kind in ("host_offline", "host_disabled", "master_failover"):
                self._spawn(self._timed_fault(fault))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _gc_loop(self) -> None:
        while True:
            # Often enough that a scaled-down 65 min expiry is noticed promptly.
            ttl = COMPLETED_TASK_TIMEOUT_S * self.timing.time_scale
            await asyncio.sleep(max(0.05, min(0.25, ttl / 4)))
            self.tasks.gc()

    async def _heartbeat_loop(self) -> None:
        """xapi's `Xapi_event.heartbeat`: a periodic `mod` of the pool object (opt-in)."""
        while True:
            await asyncio.sleep(max(0.01, self.timing.pool_heartbeat_s * self.timing.time_scale))
            if self.db.exists("pool", self.ref):
                self.db.update("pool", self.ref)  # a no-op write: one `mod` event

    async def _timed_fault(self, fault: Fault) -> None:
        await asyncio.sleep(fault.at_s * self.timing.time_scale)
        try:
            if fault.kind == "host_offline":
                self.set_host_offline(fault.host, True)
            elif fault.kind == "host_disabled":
                self.set_host_enabled(fault.host, False)
            elif fault.kind == "master_failover":
                self.failover(fault.host)
        except (KeyError, XapiFailure):
            log.warning(
                "event=fault_skipped pool=%s kind=%s host=%s", self.name, fault.kind, fault.host
            )

    async def stop(self) -> None:
        self.closing = True
        self.db.wake_waiters()  # long-polls return now
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.tasks.stop()
