"""Where each VM of a batch goes (which host, which SRs and networks) and why; the VMs that
cannot go, and why, before anything moves.

Two steps around XAPI's own verdicts (server/migrations/verdicts.py):

1. `prepare` (pure, from the live cache): for every VM, its candidate hosts with the request
   and plan of a move there, and the hosts ruled out at once (disabled, not running, being
   evacuated, no plan possible).
2. `place` (pure): VMs largest first, each to its best candidate that XAPI accepts and that
   still has room once the earlier moves have reserved theirs.

The rules:
- memory: a move reserves its VM's memory (dynamic minimum plus an estimate of XAPI's per-VM
  overhead) on its target until it ends. A host's room is what XAPI reports free (the cache's
  `memory`) minus what earlier moves of this batch and the unfinished moves of other batches
  reserve there, so a target is never overcommitted whatever the order the moves end in.
- candidates: the explicit target host, else the hosts of the target pool (or of the VM's own
  pool), optionally restricted to a list; never the VM's own host, a disabled host, a host that
  is not running or a host being evacuated.
- what only XAPI knows (CPU features, versions, networks, memory as it sees it) comes from its
  `VM.assert_can_migrate` verdict on the pair: never re-derived here.
- ranking: the VM's affinity host, then hosts reachable by XenMotion (every disk on an SR the
  host sees: only memory moves), then the least loaded after the move.
- storage: disks on SRs the target does not see go to a shared SR with room (the target pool's
  default SR first), else to one of the target's local SRs; the space is reserved as memory is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server import errors
from server.errors import RpcError, XoError
from server.migrations.plan import (
    MigrationRequest,
    Plan,
    PlanError,
    disk_vbds,
    host_sees_sr,
    make_plan,
    resident_host,
    vm_memory_needed,
)
from xen.store import ObjectStore, XoObject

GIB = 1024**3
MIB = 1024**2

# Refusals of our own (XAPI's codes are used where XAPI has one).
ALREADY_MIGRATING = "VM_ALREADY_MIGRATING"
HOST_EVACUATING = "HOST_BEING_EVACUATED"
HOST_NOT_RUNNING = "HOST_OFFLINE"
NO_TARGET_HOST = "NO_HOSTS_AVAILABLE"
NOT_ENOUGH_MEMORY = "HOST_NOT_ENOUGH_FREE_MEMORY"
NOT_ENOUGH_SPACE = "SR_NOT_ENOUGH_SPACE"
# Plan blockers that hold whatever the host: the VM itself refuses.
VM_LEVEL = frozenset({"OPERATION_BLOCKED", "VM_BAD_POWER_STATE", ALREADY_MIGRATING})


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def memory_reserved_for(vm: XoObject) -> int:
    """What a move of `vm` reserves on its target: nothing for a VM that is not running;
    else the dynamic minimum XAPI squeezes the VM to, plus an estimate of XAPI's per-domain
    overhead (not in xo-server's VM object; XAPI's is about 1/128 of the memory plus a few
    MiB): 1% plus 16 MiB, on the safe side."""
    if vm.get("power_state") not in ("Running", "Paused"):
        return 0
    static_max = int(((vm.get("memory") or {}).get("static") or [0, 0])[1] or 0)
    return vm_memory_needed(vm) + static_max // 100 + 16 * MIB


def host_free_memory(host: XoObject) -> int:
    memory = host.get("memory") or {}
    return int(memory.get("size") or 0) - int(memory.get("usage") or 0)


def sr_free_space(sr: XoObject) -> int:
    return int(sr.get("size") or 0) - int(sr.get("physical_usage") or 0)


@dataclass(slots=True)
class MoveOptions:
    """vm.migrate's options, for one move of a batch."""

    force: bool = False
    sr: str | None = None
    map_vdis_srs: dict[str, str] = field(default_factory=dict)
    map_vifs_networks: dict[str, str] = field(default_factory=dict)
    migration_network: str | None = None
    bypass_assert: bool = False

    @property
    def storage_given(self) -> bool:
        return bool(self.sr or self.map_vdis_srs or self.map_vifs_networks)


@dataclass(slots=True)
class MoveAsk:
    """One VM to place: to `target_host`, else to a host of `target_pool` (else of its own
    pool), within `hosts` when given."""

    vm: str
    target_host: str | None = None
    target_pool: str | None = None
    hosts: frozenset[str] | None = None
    options: MoveOptions = field(default_factory=MoveOptions)


@dataclass(slots=True)
class Rejection:
    """Why a host cannot take a VM (`host` None: why the VM cannot move at all)."""

    code: str
    message: str
    params: list[Any] = field(default_factory=list)
    host: str | None = None
    host_name: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message, "params": self.params}
        if self.host is not None:
            out["host"] = self.host
            out["hostName"] = self.host_name
        return out


@dataclass(slots=True)
class Candidate:
    """A possible move: the request and plan that would run, and what it reserves."""

    host: XoObject
    request: MigrationRequest
    plan: Plan
    xenmotion: bool
    storage_reason: str
    sr_bytes: dict[str, int]  # SR id -> bytes the moving disks may take there

    @property
    def host_id(self) -> str:
        return str(self.host["id"])


@dataclass(slots=True)
class Prepared:
    ask: MoveAsk
    vm: XoObject
    needed: int
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    refusal: Rejection | None = None  # the VM cannot move at all


@dataclass(slots=True)
class Outcome:
    """A placed move (`chosen`) or a refused VM (`refusal`), with the reasons either way."""

    ask: MoveAsk
    vm: XoObject
    needed: int
    chosen: Candidate | None
    reasons: list[str]
    rejected: list[Rejection]
    refusal: Rejection | None = None


@dataclass(slots=True)
class Verdict:
    """XAPI's answer to `VM.assert_can_migrate` for one (VM, host): None in the map is yes."""

    code: str
    params: list[Any]
    message: str


Verdicts = Mapping[tuple[str, str], Verdict | None]


class Placement:
    def __init__(
        self,
        store: ObjectStore,
        *,
        busy: Mapping[str, str] | None = None,
        avoid: Iterable[str] = (),
        reserved_memory: Mapping[str, int] | None = None,
        reserved_space: Mapping[str, int] | None = None,
    ) -> None:
        """`busy`: VM -> the migration moving it; `avoid`: hosts being evacuated;
        `reserved_*`: host / SR -> bytes held by the unfinished moves of other batches."""
        self.store = store
        self.busy = dict(busy or {})
        self.avoid = set(avoid)
        self.memory = dict(reserved_memory or {})
        self.space = dict(reserved_space or {})

    # -- step 1: candidates ------------------------------------------------------------------

    def prepare(self, asks: list[MoveAsk]) -> list[Prepared]:
        return [self._prepare(ask) for ask in asks]

    def _prepare(self, ask: MoveAsk) -> Prepared:
        vm = self.store.get(ask.vm) or {"id": ask.vm}
        prepared = Prepared(ask, vm, memory_reserved_for(vm))
        busy = self.busy.get(ask.vm)
        if busy is not None:
            prepared.refusal = Rejection(
                ALREADY_MIGRATING, f"the VM is already being moved by migration {busy}", [busy]
            )
            return prepared
        source = resident_host(vm)
        for host in self._hosts(ask, vm):
            if host["id"] == source:
                if ask.target_host:  # asked for explicitly: say why not
                    prepared.rejected.append(_reject(host, "SAME_HOST", "the VM is already there"))
                continue
            static = self._static_rejection(host)
            if static is not None:
                prepared.rejected.append(static)
                continue
            try:
                candidate = self._candidate(ask, vm, host)
            except PlanError as exc:
                code = exc.code or _error_code(exc.error)
                prepared.rejected.append(_reject(host, code, exc.error.message))
                continue
            blockers = [b for b in candidate.plan.blockers if b["code"] != NOT_ENOUGH_MEMORY]
            if blockers:
                code, message = blockers[0]["code"], blockers[0]["message"]
                params = _blocker_params(vm, candidate.plan, code)
                prepared.rejected.append(_reject(host, code, message, params))
                continue
            prepared.candidates.append(candidate)
        if not prepared.candidates:
            prepared.refusal = _refusal(prepared.rejected)
        return prepared

    def _hosts(self, ask: MoveAsk, vm: XoObject) -> list[XoObject]:
        if ask.target_host:
            host = self.store.get(ask.target_host)
            return [host] if host is not None else []
        pool = ask.target_pool or vm.get("$pool")
        hosts = [h for h in self.store.by_type("host") if h.get("$pool") == pool]
        if ask.hosts is not None:
            hosts = [h for h in hosts if h["id"] in ask.hosts]
        return sorted(hosts, key=lambda h: (str(h.get("name_label", "")), h["id"]))

    def _static_rejection(self, host: XoObject) -> Rejection | None:
        if not host.get("enabled", True):
            return _reject(host, "HOST_DISABLED", "the host is disabled (maintenance)")
        if host.get("power_state", "Running") != "Running":
            return _reject(host, HOST_NOT_RUNNING, f"the host is {host.get('power_state')}")
        if host["id"] in self.avoid:
            return _reject(host, HOST_EVACUATING, "the host is being evacuated")
        return None

    def _candidate(self, ask: MoveAsk, vm: XoObject, host: XoObject) -> Candidate:
        opts = ask.options
        req = MigrationRequest(
            vm=vm["id"],
            target_host=host["id"],
            force=opts.force,
            sr=opts.sr,
            map_vdis_srs=dict(opts.map_vdis_srs),
            map_vifs_networks=dict(opts.map_vifs_networks),
            migration_network=opts.migration_network,
            bypass_assert=opts.bypass_assert,
        )
        cross_pool = host.get("$pool") != vm.get("$pool")
        reason = "storage as asked"
        if not opts.storage_given:
            if cross_pool:
                reason = self._cross_pool_storage(req, vm, host)
            else:
                reason = self._intra_pool_storage(req, vm, host)
        plan = make_plan(self.store, req)
        sr_bytes: dict[str, int] = {}
        for disk in plan.disks:
            if disk.moves:
                sr_bytes[disk.sr_to] = sr_bytes.get(disk.sr_to, 0) + disk.virtual_size
        return Candidate(host, req, plan, not plan.storage_motion, reason, sr_bytes)

    def _intra_pool_storage(self, req: MigrationRequest, vm: XoObject, host: XoObject) -> str:
        name = host.get("name_label", host["id"])
        away = [
            vdi
            for _, vdi, _ in disk_vbds(self.store, vm)
            if not host_sees_sr(self.store, host, vdi.get("$SR"))
        ]
        if not away:
            return f"XenMotion: every disk is on an SR {name} sees (only the memory moves)"
        size = sum(int(vdi.get("size") or 0) for vdi in away)
        sr, why = self._pick_sr(host, size)
        req.map_vdis_srs = {vdi["id"]: sr["id"] for vdi in away}
        return (
            f"storage motion: {len(away)} disk(s) on SRs {name} does not see move to "
            f"{sr.get('name_label', sr['id'])} ({why})"
        )

    def _cross_pool_storage(self, req: MigrationRequest, vm: XoObject, host: XoObject) -> str:
        size = sum(int(vdi.get("size") or 0) for _, vdi, _ in disk_vbds(self.store, vm))
        sr, why = self._pick_sr(host, size)
        req.sr = sr["id"]
        return (
            f"cross-pool storage motion: the disks go to {sr.get('name_label', sr['id'])} ({why})"
        )

    def _pick_sr(self, host: XoObject, size: int) -> tuple[XoObject, str]:
        """A shared SR the host sees with room (its pool's default first), else a local one;
        without room anywhere, the preferred one (the space check then refuses it)."""
        pool = self.store.get(str(host.get("$pool"))) or {}
        default = pool.get("default_SR")
        seen = [
            sr
            for sr in self.store.by_type("SR")
            if sr.get("$pool") == host.get("$pool")
            and sr.get("content_type") != "iso"
            and host_sees_sr(self.store, host, sr["id"])
        ]
        seen.sort(key=lambda sr: (sr["id"] != default, not sr.get("shared"), -sr_free_space(sr)))
        if not seen:
            message = f"no SR is reachable from host {host.get('name_label', host['id'])}"
            raise PlanError(errors.server_error(message, {"code": "NO_SR"}), "NO_SR")
        for sr in seen:
            if sr_free_space(sr) - self.space.get(sr["id"], 0) >= size:
                kind = "shared" if sr.get("shared") else "local to the target host"
                return sr, f"{kind}{', the pool default SR' if sr['id'] == default else ''}"
        return seen[0], "preferred, though it may lack room"

    # -- step 2: placement --------------------------------------------------------------------

    def place(self, prepared: list[Prepared], verdicts: Verdicts) -> list[Outcome]:
        """Largest VMs first (they have the fewest options), each to its best candidate."""
        order = sorted(
            prepared, key=lambda p: (-p.needed, str(p.vm.get("name_label", "")), p.ask.vm)
        )
        outcomes = {id(p): self._place(p, verdicts) for p in order}
        return [outcomes[id(p)] for p in prepared]  # in the order asked

    def _place(self, p: Prepared, verdicts: Verdicts) -> Outcome:
        if p.refusal is not None:
            return Outcome(p.ask, p.vm, p.needed, None, [], p.rejected, p.refusal)
        rejected = list(p.rejected)
        fits: list[tuple[tuple[Any, ...], Candidate, float]] = []
        for cand in p.candidates:
            host = cand.host
            verdict = verdicts.get((p.ask.vm, cand.host_id))
            if verdict is not None:
                rejected.append(
                    _reject(
                        host,
                        verdict.code,
                        f"XAPI's VM.assert_can_migrate refuses it: {verdict.message}",
                        verdict.params,
                    )
                )
                continue
            room = host_free_memory(host) - self.memory.get(cand.host_id, 0)
            if room < p.needed:
                rejected.append(
                    _reject(
                        host,
                        NOT_ENOUGH_MEMORY,
                        f"{gib(room)} free after the earlier moves of the batch, "
                        f"{gib(p.needed)} needed",
                        [p.needed, room],
                    )
                )
                continue
            short = self._short_sr(cand)
            if short is not None:
                rejected.append(short)
                continue
            size = int((host.get("memory") or {}).get("size") or 0) or 1
            load = (size - room + p.needed) / size
            affinity = p.vm.get("affinityHost") == cand.host_id
            key = (not affinity, not cand.xenmotion, load, host.get("name_label", ""))
            fits.append((key, cand, load))
        if not fits:
            return Outcome(p.ask, p.vm, p.needed, None, [], rejected, _refusal(rejected))
        fits.sort(key=lambda f: f[0])
        _, chosen, load = fits[0]
        room = host_free_memory(chosen.host) - self.memory.get(chosen.host_id, 0)
        self.memory[chosen.host_id] = self.memory.get(chosen.host_id, 0) + p.needed
        for sr_id, size in chosen.sr_bytes.items():
            self.space[sr_id] = self.space.get(sr_id, 0) + size
        reasons = []
        if p.vm.get("affinityHost") == chosen.host_id:
            reasons.append("the VM's affinity host")
        reasons.append(chosen.storage_reason)
        others = ", ".join(f"{c.host.get('name_label')} {ld:.0%}" for _, c, ld in fits[1:])
        reasons.append(
            f"least loaded: {load:.0%} of its memory in use after this move"
            + (f" (then {others})" if others else "")
        )
        reasons.append(
            f"memory: {gib(room)} free after the earlier moves of the batch, {gib(p.needed)} needed"
        )
        reasons.append(
            "XAPI's check skipped (bypassAssert)"
            if chosen.request.bypass_assert
            else "XAPI's VM.assert_can_migrate accepts this host (CPU, versions, networks)"
        )
        return Outcome(p.ask, p.vm, p.needed, chosen, reasons, rejected)

    def _short_sr(self, cand: Candidate) -> Rejection | None:
        for sr_id, size in cand.sr_bytes.items():
            sr = self.store.get(sr_id) or {}
            room = sr_free_space(sr) - self.space.get(sr_id, 0)
            if room < size:
                return _reject(
                    cand.host,
                    NOT_ENOUGH_SPACE,
                    f"SR {sr.get('name_label', sr_id)} has {gib(room)} free after the earlier "
                    f"moves of the batch, the disks need up to {gib(size)}",
                    [sr_id, size, room],
                )
        return None


def _reject(host: XoObject, code: str, message: str, params: list[Any] | None = None) -> Rejection:
    return Rejection(code, message, params or [], host["id"], str(host.get("name_label", "")))


def _refusal(rejected: list[Rejection]) -> Rejection:
    """Why a VM cannot move: its own refusal when every host says the same VM-level thing,
    else each host's reason."""
    if not rejected:
        return Rejection(NO_TARGET_HOST, "no other host to move it to")
    first = rejected[0]
    if first.code in VM_LEVEL and all(r.code == first.code for r in rejected):
        return Rejection(first.code, first.message, first.params)
    detail = "; ".join(f"{r.host_name or r.host}: {r.message}" for r in rejected)
    return Rejection(first.code, f"no host can take it: {detail}", first.params)


def _blocker_params(vm: XoObject, plan: Plan, code: str) -> list[Any]:
    """The params XAPI gives with the refusal the plan predicts."""
    if code == "OPERATION_BLOCKED":
        return [vm["id"], (vm.get("blockedOperations") or {}).get(plan.mode, "")]
    if code == "VM_BAD_POWER_STATE":
        expected = "running" if plan.mode == "pool_migrate" else "halted, suspended, running"
        return [vm["id"], expected, str(vm.get("power_state", "")).lower()]
    return [vm["id"]]


def _error_code(error: XoError | RpcError) -> str:
    data = error.data if isinstance(error.data, dict) else {}
    return str(data.get("code") or "PLAN_FAILED")
