"""XAPI's verdict on each candidate move of a batch: `VM.assert_can_migrate` on the pair.

XAPI alone knows some reasons a host cannot take a VM (the CPU features the VM booted with,
software versions, networks, memory as it accounts it); placement asks it instead of guessing,
so that the answer stays right as XAPI's rules change. One `host.migrate_receive` per target
host gives the destination map, then one dry run per (VM, host) pair, a few at a time.

For XenMotion candidates the dry run is storage motion's with every disk staying on its SR
(XAPI runs the same host checks); its OPERATION_BLOCKED (about migrate_send) and
VDI_CBT_ENABLED (handled at migration time, as xo-server does) do not count against a host.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from server.migrations.connections import PoolConnections
from server.migrations.hints import hint_for
from server.migrations.placement import Candidate, Prepared, Verdict
from server.migrations.plan import Plan
from server.migrations.runner import migrate_send_args
from xen.errors import PoolUnavailable, XapiError
from xen.store import ObjectStore

log = logging.getLogger("xo_migrate.migrations")

IGNORED = frozenset({"VDI_CBT_ENABLED"})


class VerdictCollector:
    def __init__(self, store: ObjectStore, pools: PoolConnections, concurrency: int) -> None:
        self._store = store
        self._pools = pools
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._dests: dict[tuple[str, str], asyncio.Future[dict[str, str]]] = {}

    async def collect(self, prepared: list[Prepared]) -> dict[tuple[str, str], Verdict | None]:
        pairs = [
            (p.ask.vm, cand)
            for p in prepared
            for cand in p.candidates
            if not cand.request.bypass_assert
        ]
        answers = await asyncio.gather(*(self._verdict(cand) for _, cand in pairs))
        return {(vm, cand.host_id): v for (vm, cand), v in zip(pairs, answers, strict=True)}

    async def _verdict(self, cand: Candidate) -> Verdict | None:
        plan = cand.plan
        async with self._limit:
            try:
                dest = await self._dest(plan)
                src = self._pools.connection(plan.source_pool)
                await src.call("VM.assert_can_migrate", *self._args(cand, dest))
            except XapiError as exc:
                if exc.code in IGNORED:
                    return None
                if exc.code == "OPERATION_BLOCKED" and not plan.storage_motion:
                    return None  # XenMotion's own block is the plan's `blockers`
                return self._refusal(plan, exc)
            except PoolUnavailable as exc:
                return Verdict("POOL_UNAVAILABLE", [exc.pool], str(exc))
        return None

    def _refusal(self, plan: Plan, exc: XapiError) -> Verdict:
        """XAPI's refusal with XO ids for its refs, and its words (or our hint) to read."""
        params: list[Any] = []
        words: list[str] = []
        for param in exc.params:
            if param.startswith("OpaqueRef:"):
                param = (
                    self._store.id_of_ref(plan.source_pool, param)
                    or self._store.id_of_ref(plan.target_pool, param)
                    or param
                )
            elif not _looks_like_id(param):
                words.append(param)
            params.append(param)
        text = "; ".join(words) if words else hint_for(exc.code)
        return Verdict(exc.code, params, f"{exc.code}: {text}")

    def _network_ref(self, plan: Plan) -> str:
        if plan.migration_network_ref:
            return plan.migration_network_ref
        host = self._store.get(plan.target_host) or {}
        for pif_id in host.get("$PIFs", []):
            pif = self._store.get(pif_id) or {}
            if pif.get("management"):
                network = self._store.get(str(pif.get("$network"))) or {}
                return str(network.get("_xapiRef", ""))
        return ""

    async def _dest(self, plan: Plan) -> dict[str, str]:
        """The destination map of the target host (one migrate_receive per host and network,
        shared by every pair)."""
        network = self._network_ref(plan)
        key = (plan.target_host, network)
        future = self._dests.get(key)
        if future is None:
            dst = self._pools.connection(plan.target_pool)
            future = asyncio.ensure_future(
                dst.call("host.migrate_receive", plan.target_host_ref, network, {})
            )
            self._dests[key] = future
        return await asyncio.shield(future)

    def _args(self, cand: Candidate, dest: dict[str, str]) -> list[Any]:
        plan = cand.plan
        if plan.storage_motion:
            return migrate_send_args(plan, cand.request, dest)
        # XenMotion: every disk stays where it is.
        vdi_map = {}
        for disk in plan.disks:
            sr = self._store.get(disk.sr_to) or {}
            vdi_map[disk.vdi_ref] = str(sr.get("_xapiRef", ""))
        force = "true" if cand.request.force else "false"
        return [plan.vm_ref, dest, True, vdi_map, {}, {"force": force}]

    async def aclose(self) -> None:
        """Wait for the destination maps still being asked for (a planning cut short)."""
        pending = [f for f in self._dests.values() if not f.done()]
        for f in pending:
            f.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _looks_like_id(text: str) -> bool:
    """A uuid or a number: a param to keep, not words to show."""
    return (len(text) == 36 and text.count("-") == 4) or text.lstrip("-").isdigit()
