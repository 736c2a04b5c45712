"""Decide how a VM migration will run, from the live object cache, and explain every choice.

This is xo-server's `migrateVm` decision logic (xo-server-api.md 5.2, xapi.md 3.6) made
explicit: the mode (XenMotion `VM.pool_migrate` or storage motion `VM.migrate_send`), the
target SR of every disk and the target network of every network card, each with the reason it
was chosen, the migration network, the bytes that will move and the capacity checks. The same
plan drives the migration and is what `migration.plan` returns, so what users are shown is
exactly what will be done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from server import errors
from server.errors import RpcError, XoError
from xen.store import ObjectStore, XoObject

MIGRATION_NETWORK_KEY = "xo:migrationNetwork"


class PlanError(Exception):
    """The migration cannot be planned; `error` is what the client sees."""

    def __init__(self, error: XoError | RpcError, code: str = "") -> None:
        super().__init__(error.message)
        self.error = error
        self.code = code  # our own code for the migration record (NO_DEFAULT_SR ...)


@dataclass(slots=True)
class MigrationRequest:
    """What the caller asked for, as ids (vm.migrate's params, or vm.migrate_pool's)."""

    vm: str
    target_host: str
    force: bool = False
    sr: str | None = None
    map_vdis_srs: dict[str, str] = field(default_factory=dict)
    map_vifs_networks: dict[str, str] = field(default_factory=dict)
    migration_network: str | None = None
    bypass_assert: bool = False
    # vm.migrate_pool: always storage motion, one network for every VIF.
    storage_motion: bool = False
    target_network: str | None = None
    # The batch (server/migrations/batches.py) this move belongs to: it waits for a queue
    # slot even as XenMotion, and is held while its batch is paused.
    batch: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MigrationRequest:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class DiskPlan:
    vdi: str
    name: str
    device: str
    snapshot: bool
    sr_from: str | None
    sr_to: str
    reason: str  # "explicit map" | "sr param" | "still reachable" | "pool default"
    virtual_size: int
    allocated: int
    moves: bool  # intra-pool to the same SR: not copied (xapi.md 3.5 step 5)
    cbt_enabled: bool = False
    vdi_ref: str = ""
    sr_to_ref: str = ""


@dataclass(slots=True)
class VifPlan:
    vif: str
    device: str
    mac: str
    network_from: str | None
    network_to: str
    reason: str  # "explicit map" | "target_network param" | "management network"
    vif_ref: str = ""
    network_to_ref: str = ""


@dataclass(slots=True)
class Plan:
    mode: str  # "pool_migrate" | "migrate_send"
    mode_reason: str
    cross_pool: bool
    vm: str
    vm_name: str
    vm_ref: str
    source_pool: str
    source_host: str | None
    target_pool: str
    target_host: str
    target_host_name: str
    target_host_ref: str
    migration_network: str | None
    migration_network_reason: str
    migration_network_ref: str = ""
    disks: list[DiskPlan] = field(default_factory=list)
    vifs: list[VifPlan] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    sr_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Refusals XAPI will certainly answer, predicted from the cache: {code, message}.
    blockers: list[dict[str, str]] = field(default_factory=list)
    # Set when pool_migrate may fall back to storage motion on VM_REQUIRES_SR.
    fallback: str = ""

    @property
    def storage_motion(self) -> bool:
        return self.mode == "migrate_send"

    @property
    def disk_bytes(self) -> int:
        return sum(d.allocated for d in self.disks if d.moves)

    @property
    def memory_bytes(self) -> int:
        return int(self.memory.get("needed", 0))

    def vdi_map(self) -> dict[str, str]:
        return {d.vdi_ref: d.sr_to_ref for d in self.disks}

    def vif_map(self) -> dict[str, str]:
        return {v.vif_ref: v.network_to_ref for v in self.vifs}

    def to_json(self) -> dict[str, Any]:
        """The public view (XO ids only, no XAPI refs)."""
        disks = [
            {
                "vdi": d.vdi,
                "name": d.name,
                "device": d.device,
                "snapshot": d.snapshot,
                "srFrom": d.sr_from,
                "srTo": d.sr_to,
                "reason": d.reason,
                "virtualSize": d.virtual_size,
                "allocated": d.allocated,
                "moves": d.moves,
                "cbtEnabled": d.cbt_enabled,
            }
            for d in self.disks
        ]
        vifs = [
            {
                "vif": v.vif,
                "device": v.device,
                "mac": v.mac,
                "networkFrom": v.network_from,
                "networkTo": v.network_to,
                "reason": v.reason,
            }
            for v in self.vifs
        ]
        return {
            "mode": self.mode,
            "modeReason": self.mode_reason,
            "crossPool": self.cross_pool,
            "vm": self.vm,
            "vmName": self.vm_name,
            "sourcePool": self.source_pool,
            "sourceHost": self.source_host,
            "targetPool": self.target_pool,
            "targetHost": self.target_host,
            "migrationNetwork": self.migration_network,
            "migrationNetworkReason": self.migration_network_reason,
            "disks": disks,
            "vifs": vifs,
            "bytesToMove": self.disk_bytes + self.memory_bytes,
            "diskBytesToMove": self.disk_bytes,
            "memoryBytesToMove": self.memory_bytes,
            "memory": self.memory,
            "srSpace": self.sr_space,
            "warnings": self.warnings,
            "blockers": self.blockers,
            **({"fallback": self.fallback} if self.fallback else {}),
        }


def resident_host(vm: XoObject) -> str | None:
    """The host a VM runs on (its `$container` while it is not halted), else None."""
    if vm.get("power_state") in ("Running", "Paused", "Suspended"):
        container = vm.get("$container")
        return str(container) if container and container != vm.get("$pool") else None
    return None


def vm_memory_needed(vm: XoObject) -> int:
    """What the target host must have free: dynamic min (XAPI squeezes to it), else static max."""
    memory = vm.get("memory") or {}
    dynamic = memory.get("dynamic") or [0, 0]
    static = memory.get("static") or [0, 0]
    return int(dynamic[0] or static[1] or 0)


def _get(store: ObjectStore, obj_id: str | None, types: str | tuple[str, ...]) -> XoObject:
    wanted = (types,) if isinstance(types, str) else types
    obj = store.get(obj_id) if obj_id else None
    if obj is None or obj.get("type") not in wanted:
        raise PlanError(
            errors.no_such_object(obj_id, types if isinstance(types, str) else list(types))
        )
    return obj


def _maybe(store: ObjectStore, obj_id: str | None) -> XoObject | None:
    return store.get(obj_id) if obj_id else None


def _pool(store: ObjectStore, pool_id: str) -> XoObject:
    pool = store.get(pool_id)
    if pool is None:
        raise PlanError(errors.no_such_object(pool_id, "pool"))
    return pool


def _management_network(store: ObjectStore, host: XoObject) -> XoObject | None:
    for pif_id in host.get("$PIFs", []):
        pif = store.get(pif_id)
        if pif is not None and pif.get("management"):
            return _maybe(store, pif.get("$network"))
    return None


def host_sees_sr(store: ObjectStore, host: XoObject, sr_id: str | None) -> bool:
    sr = _maybe(store, sr_id)
    if sr is None:
        return False
    for pbd_id in sr.get("$PBDs", []):
        pbd = store.get(pbd_id)
        if pbd is not None and pbd.get("host") == host["id"] and pbd.get("attached"):
            return True
    return False


def _network_warnings(store: ObjectStore, host: XoObject, network: XoObject) -> list[str]:
    """xo-server's migration network precheck: warnings only."""
    for pif_id in host.get("$PIFs", []):
        pif = store.get(pif_id)
        if pif is not None and pif.get("$network") == network["id"]:
            if not pif.get("attached"):
                return [f"PIF is not attached: host {host['id']} network {network['id']}"]
            return []
    return [f"host have no PIF in the network: host {host['id']} network {network['id']}"]


def disk_vbds(store: ObjectStore, vm: XoObject) -> list[tuple[XoObject, XoObject, bool]]:
    """(VBD, VDI, is_snapshot) for every Disk VBD of the VM and of its snapshots; snapshot
    VDIs whose parent is alive are skipped: XAPI moves them with their parent."""
    out: list[tuple[XoObject, XoObject, bool]] = []
    seen: set[str] = set()
    owners = [(vm, False)] + [
        (snap, True) for snap_id in vm.get("snapshots", []) if (snap := store.get(snap_id))
    ]
    for owner, is_snapshot in owners:
        for vbd_id in owner.get("$VBDs", []):
            vbd = store.get(vbd_id)
            if vbd is None or vbd.get("is_cd_drive"):
                continue
            vdi = _maybe(store, vbd.get("VDI"))
            if vdi is None or vdi["id"] in seen:
                continue
            parent = vdi.get("$snapshot_of")
            if is_snapshot and parent and store.get(parent) is not None:
                continue
            seen.add(vdi["id"])
            out.append((vbd, vdi, is_snapshot))
    return out


def _vm_vifs(store: ObjectStore, vm: XoObject) -> list[XoObject]:
    """The VM's VIFs plus snapshot VIFs whose device no VM VIF uses (as xo-server)."""
    vifs = [vif for vif_id in vm.get("VIFs", []) if (vif := store.get(vif_id))]
    devices = {vif.get("device") for vif in vifs}
    for snap_id in vm.get("snapshots", []):
        snap = store.get(snap_id)
        for vif_id in (snap or {}).get("VIFs", []):
            vif = store.get(vif_id)
            if vif is not None and vif.get("device") not in devices:
                devices.add(vif.get("device"))
                vifs.append(vif)
    return vifs


def make_plan(store: ObjectStore, req: MigrationRequest) -> Plan:
    vm = _get(store, req.vm, "VM")
    host = _get(store, req.target_host, "host")
    sr = _get(store, req.sr, "SR") if req.sr else None
    target_network = _get(store, req.target_network, "network") if req.target_network else None
    explicit_mignet = (
        _get(store, req.migration_network, "network") if req.migration_network else None
    )
    vdi_targets: dict[str, XoObject] = {}
    for vdi_id, sr_id in req.map_vdis_srs.items():
        _get(store, vdi_id, ("VDI", "VDI-snapshot"))
        vdi_targets[vdi_id] = _get(store, sr_id, "SR")
    vif_targets: dict[str, XoObject] = {}
    for vif_id, net_id in req.map_vifs_networks.items():
        _get(store, vif_id, "VIF")
        vif_targets[vif_id] = _get(store, net_id, "network")

    source_pool = vm["$pool"]
    target_pool_id = host["$pool"]
    target_pool = _pool(store, target_pool_id)
    cross_pool = source_pool != target_pool_id
    reasons = []
    if cross_pool:
        reasons.append("the target host is in another pool")
    if req.sr:
        reasons.append("a target SR was given")
    if req.map_vdis_srs:
        reasons.append("a disk to SR map was given")
    if req.map_vifs_networks:
        reasons.append("a network card map was given")
    if req.storage_motion:
        reasons.append("vm.migrate_pool always uses storage motion")
    storage_motion = bool(reasons)
    mode_reason = "; ".join(reasons) or "same pool and no storage change: disks stay where they are"

    plan = Plan(
        mode="migrate_send" if storage_motion else "pool_migrate",
        mode_reason=mode_reason,
        cross_pool=cross_pool,
        vm=vm["id"],
        vm_name=vm.get("name_label", ""),
        vm_ref=vm["_xapiRef"],
        source_pool=source_pool,
        source_host=resident_host(vm),
        target_pool=target_pool_id,
        target_host=host["id"],
        target_host_name=host.get("name_label", ""),
        target_host_ref=host["_xapiRef"],
        migration_network=None,
        migration_network_reason="",
    )

    # Migration network: explicit, else the target pool's xo:migrationNetwork, else (storage
    # motion only) the target host's management network.
    mignet: XoObject | None = explicit_mignet
    if mignet is not None:
        plan.migration_network_reason = "explicit migrationNetwork"
    else:
        pool_default = (target_pool.get("otherConfig") or {}).get(MIGRATION_NETWORK_KEY)
        if pool_default and (candidate := store.get(pool_default)) is not None:
            mignet = candidate
            plan.migration_network_reason = f"the target pool's {MIGRATION_NETWORK_KEY}"
    if mignet is not None:
        plan.warnings += _network_warnings(store, host, mignet)

    _plan_memory(store, plan, vm, host)
    _plan_vm_state(plan, vm)
    if not storage_motion:
        plan.fallback = "storage motion if XAPI answers VM_REQUIRES_SR (storage not shared)"
        if mignet is not None:
            plan.migration_network = mignet["id"]
            plan.migration_network_ref = mignet["_xapiRef"]
        else:
            plan.migration_network_reason = "XAPI's default (the management network)"
        # Report the disks too (they stay), so a user sees what would happen.
        for vbd, vdi, is_snapshot in disk_vbds(store, vm):
            plan.disks.append(_disk(store, vbd, vdi, is_snapshot, vdi.get("$SR"), "stays", False))
        return plan

    return complete_storage_plan(
        store,
        plan,
        vm,
        host,
        target_pool,
        req,
        sr,
        target_network,
        vdi_targets,
        vif_targets,
        mignet,
    )


def storage_fallback(store: ObjectStore, plan: Plan, req: MigrationRequest) -> Plan:
    """The plan after pool_migrate failed with VM_REQUIRES_SR: storage motion with the
    defaults only (xo-server does not forward sr, maps or bypassAssert to that retry)."""
    retry = MigrationRequest(
        vm=req.vm,
        target_host=req.target_host,
        force=req.force,
        migration_network=req.migration_network,
        storage_motion=True,
    )
    new = make_plan(store, retry)
    new.mode_reason = "XAPI answered VM_REQUIRES_SR to pool_migrate: storage is not shared"
    return new


def complete_storage_plan(
    store: ObjectStore,
    plan: Plan,
    vm: XoObject,
    host: XoObject,
    target_pool: XoObject,
    req: MigrationRequest,
    sr: XoObject | None,
    target_network: XoObject | None,
    vdi_targets: dict[str, XoObject],
    vif_targets: dict[str, XoObject],
    mignet: XoObject | None,
) -> Plan:
    management = _management_network(store, host)
    if mignet is None:
        mignet = target_network or management
        plan.migration_network_reason = (
            "the target_network_id param"
            if target_network
            else "the target host's management network"
        )
        if mignet is None:
            raise PlanError(
                errors.server_error(
                    f"the target host {host['id']} has no management network",
                    {"code": "NO_MIGRATION_NETWORK"},
                ),
                "NO_MIGRATION_NETWORK",
            )
    plan.migration_network = mignet["id"]
    plan.migration_network_ref = mignet["_xapiRef"]

    default_sr_id = target_pool.get("default_SR")
    for vbd, vdi, is_snapshot in disk_vbds(store, vm):
        target: XoObject | None
        if vdi["id"] in vdi_targets:
            target, reason = vdi_targets[vdi["id"]], "explicit map"
        elif sr is not None:
            target, reason = sr, "sr param"
        elif host_sees_sr(store, host, vdi.get("$SR")):
            target, reason = store.get(vdi["$SR"]), "still reachable from the target host"
        elif default_sr_id and (default := store.get(default_sr_id)) is not None:
            target, reason = default, "the target pool's default SR"
        else:
            name = target_pool.get("name_label", target_pool["id"])
            message = f"This operation requires a default SR to be set on the pool {name}"
            raise PlanError(
                errors.server_error(message, {"code": "NO_DEFAULT_SR", "pool": target_pool["id"]}),
                "NO_DEFAULT_SR",
            )
        assert target is not None
        moves = plan.cross_pool or target["id"] != vdi.get("$SR")
        plan.disks.append(_disk(store, vbd, vdi, is_snapshot, target["id"], reason, moves))
        plan.disks[-1].sr_to_ref = target["_xapiRef"]

    if plan.cross_pool:
        for vif in _vm_vifs(store, vm):
            if vif["id"] in vif_targets:
                net, reason = vif_targets[vif["id"]], "explicit map"
            elif target_network is not None:
                net, reason = target_network, "the target_network_id param"
            elif management is not None:
                net, reason = management, "the target host's management network"
            else:
                raise PlanError(
                    errors.server_error(
                        f"no network for VIF {vif['id']}", {"code": "NO_TARGET_NETWORK"}
                    ),
                    "NO_TARGET_NETWORK",
                )
            plan.vifs.append(
                VifPlan(
                    vif=vif["id"],
                    device=str(vif.get("device", "")),
                    mac=str(vif.get("MAC", "")),
                    network_from=vif.get("$network"),
                    network_to=net["id"],
                    reason=reason,
                    vif_ref=vif["_xapiRef"],
                    network_to_ref=net["_xapiRef"],
                )
            )
    elif req.map_vifs_networks:
        plan.warnings.append("VIF mapping is ignored because this is an intra-pool migration")

    _plan_sr_space(store, plan)
    return plan


def _disk(
    store: ObjectStore,
    vbd: XoObject,
    vdi: XoObject,
    is_snapshot: bool,
    sr_to: str | None,
    reason: str,
    moves: bool,
) -> DiskPlan:
    return DiskPlan(
        vdi=vdi["id"],
        name=vdi.get("name_label", ""),
        device=str(vbd.get("device") or vbd.get("position") or ""),
        snapshot=is_snapshot,
        sr_from=vdi.get("$SR"),
        sr_to=sr_to or "",
        reason=reason,
        virtual_size=int(vdi.get("size") or 0),
        allocated=int(vdi.get("usage") or 0),
        moves=moves,
        cbt_enabled=bool(vdi.get("cbt_enabled")),
        vdi_ref=vdi["_xapiRef"],
    )


# Power states each call accepts (xapi.md 3.3 and 3.5), lower-case as XAPI reports them.
ACCEPTED_STATES = {"pool_migrate": ("running",), "migrate_send": ("halted", "suspended", "running")}


def _plan_vm_state(plan: Plan, vm: XoObject) -> None:
    """The VM-level refusals XAPI checks first: blocked operation, then power state."""
    reason = (vm.get("blockedOperations") or {}).get(plan.mode)
    if reason is not None:
        plan.blockers.append(
            {
                "code": "OPERATION_BLOCKED",
                "message": f"{plan.mode} is blocked on this VM ({reason}): XAPI will refuse "
                "with OPERATION_BLOCKED; remove the block to proceed",
            }
        )
    state = str(vm.get("power_state", "")).lower()
    accepted = ACCEPTED_STATES[plan.mode]
    if state not in accepted:
        advice = (
            "; a halted VM can move with storage motion (give sr, or use vm.migrate_pool)"
            if plan.mode == "pool_migrate" and state == "halted"
            else ""
        )
        plan.blockers.append(
            {
                "code": "VM_BAD_POWER_STATE",
                "message": f"the VM is {state} but {plan.mode} needs "
                f"{' or '.join(accepted)}: XAPI will refuse with VM_BAD_POWER_STATE{advice}",
            }
        )


def _plan_memory(store: ObjectStore, plan: Plan, vm: XoObject, host: XoObject) -> None:
    needed = vm_memory_needed(vm)
    memory = host.get("memory") or {}
    size = int(memory.get("size") or 0)
    free = size - int(memory.get("usage") or 0)
    same_host = resident_host(vm) == host["id"]
    plan.memory = {
        "needed": needed,
        "free": free,
        "ok": same_host or free >= needed,
    }
    if not plan.memory["ok"]:
        plan.blockers.append(
            {
                "code": "HOST_NOT_ENOUGH_FREE_MEMORY",
                "message": f"the target host has {free} bytes free, the VM needs {needed}",
            }
        )
        plan.warnings.append(
            f"the target host has {free} bytes free, the VM needs {needed}: "
            "XAPI will refuse with HOST_NOT_ENOUGH_FREE_MEMORY"
        )


def _plan_sr_space(store: ObjectStore, plan: Plan) -> None:
    needed: dict[str, int] = {}
    for disk in plan.disks:
        if disk.moves:
            needed[disk.sr_to] = needed.get(disk.sr_to, 0) + disk.virtual_size
    for sr_id, bytes_needed in needed.items():
        sr = store.get(sr_id) or {}
        free = int(sr.get("size") or 0) - int(sr.get("physical_usage") or 0)
        plan.sr_space[sr_id] = {
            "name": sr.get("name_label", ""),
            "free": free,
            "needed": bytes_needed,
            "ok": free >= bytes_needed,
        }
        if free < bytes_needed:
            plan.warnings.append(
                f"SR {sr_id} has {free} bytes free, the disks moving there need up to {bytes_needed}"
            )
