"""XAPI's migration checks, in XAPI's order (xapi.md 3.3-3.5), and the migration plan:
which disks move to which SR, which network each VIF lands on. Pure reads of the databases:
nothing here changes state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from xen.sim import cpuid
from xen.sim.db import EPOCH, NULL_REF, Database
from xen.sim.registry import PoolLike, XapiFailure

POOL_MIGRATE_STATES = ("running",)
MIGRATE_SEND_STATES = ("halted", "suspended", "running")
CONTROL_DOMAIN_MSG = "This operation is not allowed on a control domain"
VIF_MAP_MSG = (
    "VIF mapping is not allowed for intra-pool migration -all VIFs must be on the same network"
)
COPY_MSG = (
    "Copy mode is disallowed on intra pool storage migration, try efficient alternatives, "
    "for example, VM.copy/clone."
)


def flag(options: dict[str, Any], key: str) -> bool:
    return str(options.get(key, "")).strip().lower() in {"true", "on", "1", "yes"}


# -- where the VM goes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    pool: PoolLike  # the destination pool (the source pool itself for intra-pool)
    host: str  # a host ref in that pool
    cross: bool
    # The address migrate_receive gave (its PIF on the chosen network); "" for pool_migrate.
    address: str = ""


# -- checks, in XAPI's order -------------------------------------------------------------------


def check_operation(
    db: Database,
    vm: str,
    rec: dict[str, Any],
    op: str,
    states: tuple[str, ...],
    *,
    in_progress: bool = True,
    strict: bool = True,
) -> None:
    """`Xapi_vm_lifecycle.check_operation_error`: the first failing rule wins. `strict` is
    `not force`: forcing skips the guest feature check."""
    blocked = rec["blocked_operations"]
    if op in blocked:
        raise XapiFailure("OPERATION_BLOCKED", vm, blocked[op])
    actual = str(rec["power_state"]).lower()
    if actual not in states:
        raise XapiFailure("VM_BAD_POWER_STATE", vm, ", ".join(states), actual)
    if in_progress and rec["current_operations"]:
        task, other = next(iter(rec["current_operations"].items()))
        raise XapiFailure("OTHER_OPERATION_IN_PROGRESS", "VM", vm, other, task)
    # migrate_send may move non-default templates (XAPI allows it); nothing else may.
    if rec["is_a_template"] and (op != "migrate_send" or rec["is_default_template"]):
        raise XapiFailure("VM_IS_TEMPLATE", vm, op)
    if rec["is_a_snapshot"]:
        raise XapiFailure("VM_IS_SNAPSHOT", vm, op)
    platform = rec["platform"]
    if flag(platform, "nomigrate") or flag(platform, "nested-virt"):
        raise XapiFailure("VM_IS_IMMOBILE", vm)
    if rec["is_control_domain"]:
        raise XapiFailure("OPERATION_NOT_ALLOWED", CONTROL_DOMAIN_MSG)
    if actual == "running":
        check_guest_can_suspend(db, vm, rec, strict=strict)
        if rec["attached_PCIs"]:
            raise XapiFailure("VM_HAS_PCI_ATTACHED", vm)
        if rec["VGPUs"]:
            raise XapiFailure("VM_HAS_VGPU", vm)
        if rec["VUSBs"]:
            raise XapiFailure("VM_HAS_VUSBS", vm)


def check_guest_can_suspend(db: Database, vm: str, rec: dict[str, Any], *, strict: bool) -> None:
    """A live migration suspends the guest: an HVM guest must say it can (`feature-suspend`
    in its guest metrics, reported by its PV drivers); PV/PVH guests can implicitly."""
    metrics = (
        db.get("VM_metrics", rec["metrics"]) if db.exists("VM_metrics", rec["metrics"]) else {}
    )
    domain_type = metrics.get("current_domain_type") or rec["domain_type"]
    if domain_type in ("unspecified", ""):
        domain_type = rec["domain_type"]
    guest = rec["guest_metrics"]
    other = (
        db.get("VM_guest_metrics", guest)["other"] if db.exists("VM_guest_metrics", guest) else {}
    )
    if strict and domain_type == "hvm" and other.get("feature-suspend") != "1":
        raise XapiFailure("VM_LACKS_FEATURE", vm)
    reason = other.get("data-cant-suspend-reason")
    if reason:
        raise XapiFailure("VM_NON_SUSPENDABLE", vm, reason)


def host_version(db: Database, host: str) -> tuple[tuple[int, ...], int, int]:
    """What "newer" means between hosts: the platform version, then the API version."""
    rec = db.get("host", host)
    platform = str(rec["software_version"].get("platform_version", ""))
    parts = tuple(int(p) for p in platform.split(".") if p.isdigit())
    return parts, int(rec["API_version_major"]), int(rec["API_version_minor"])


def source_host(db: Database, rec: dict[str, Any]) -> str:
    """The host a VM runs on, or the master for a VM that is not running."""
    host = rec["resident_on"]
    if db.exists("host", host):
        return str(host)
    pools = db.all_refs("pool")
    return str(db.get("pool", pools[0])["master"]) if pools else NULL_REF


def check_versions_not_decreasing(db: Database, rec: dict[str, Any], host: str) -> None:
    """Intra-pool, during a rolling upgrade: never from a newer host to an older one."""
    src = source_host(db, rec)
    if db.exists("host", src) and host_version(db, host) < host_version(db, src):
        raise XapiFailure("NOT_SUPPORTED_DURING_UPGRADE")


def check_remote_version(
    src_db: Database, vm: str, rec: dict[str, Any], dst_db: Database, host: str
) -> None:
    """Cross-pool: the destination host may not run older software than the source."""
    src = source_host(src_db, rec)
    if src_db.exists("host", src) and host_version(dst_db, host) < host_version(src_db, src):
        raise XapiFailure("VM_HOST_INCOMPATIBLE_VERSION_MIGRATE", vm, host)


# Storage capabilities a disk's SRs need for storage motion (xapi `assert_sr_support_operations`).
SOURCE_SR_CAPS = ("VDI_SNAPSHOT", "VDI_MIRROR")
DEST_SR_CAPS = ("VDI_SNAPSHOT", "VDI_MIRROR_IN")


def sr_capabilities(db: Database, sr: str) -> set[str]:
    sm = db.find_one("SM", type=db.get("SR", sr)["type"])
    return {c.split("/")[0] for c in db.get("SM", sm)["capabilities"]} if sm else set()


def check_srs_support_migration(
    src_db: Database, dst_db: Database, vdi_map: dict[str, str], *, cross: bool
) -> None:
    """SR_DOES_NOT_SUPPORT_MIGRATION for a disk that moves from (or to) an SR whose driver
    cannot mirror. An SMAPIv1 driver's VDI_MIRROR also stands for VDI_MIRROR_IN."""
    for vdi, sr in vdi_map.items():
        if not src_db.exists("VDI", vdi) or not dst_db.exists("SR", sr):
            continue
        source = src_db.get("VDI", vdi)["SR"]
        if not cross and source == sr:
            continue  # intra-pool onto its own SR: nothing moves
        if src_db.exists("SR", source) and not set(SOURCE_SR_CAPS) <= sr_capabilities(
            src_db, source
        ):
            raise XapiFailure("SR_DOES_NOT_SUPPORT_MIGRATION", source, ";".join(SOURCE_SR_CAPS))
        dest_caps = sr_capabilities(dst_db, sr)
        if "VDI_MIRROR" in dest_caps:
            dest_caps.add("VDI_MIRROR_IN")
        if not set(DEST_SR_CAPS) <= dest_caps:
            raise XapiFailure("SR_DOES_NOT_SUPPORT_MIGRATION", sr, ";".join(DEST_SR_CAPS))


def check_cpu(host_db: Database, vm: str, rec: dict[str, Any], host: str) -> None:
    if rec["power_state"] == "Halted":
        return  # the CPUID check only guards a live domain
    reason = cpuid.incompatibility(
        host_db.get("host", host)["cpu_info"], rec["last_boot_CPU_flags"], rec["domain_type"]
    )
    if reason is not None:
        raise XapiFailure("VM_INCOMPATIBLE_WITH_THIS_HOST", vm, host, reason)


def host_metrics(db: Database, host: str) -> dict[str, Any] | None:
    ref = db.get("host", host)["metrics"]
    return db.get("host_metrics", ref) if db.exists("host_metrics", ref) else None


def host_live(db: Database, host: str) -> bool:
    metrics = host_metrics(db, host)
    return metrics is None or bool(metrics["live"])


def check_host_usable(db: Database, host: str, *, localhost: bool = False) -> None:
    if not host_live(db, host):
        raise XapiFailure("HOST_NOT_LIVE")
    if not db.get("host", host)["enabled"] and not localhost:
        raise XapiFailure("HOST_DISABLED", host)


def host_sees_sr(db: Database, host: str, sr: str, *, attached: bool = True) -> bool:
    for pbd in db.get("host", host)["PBDs"]:
        rec = db.get("PBD", pbd)
        if rec["SR"] == sr and (rec["currently_attached"] or not attached):
            return True
    return False


def check_srs_visible(db: Database, vm: str, rec: dict[str, Any], host: str) -> None:
    """VM_REQUIRES_SR: every SR the VM's disks (CDs included) live on must be plugged on the
    destination. This is XAPI's "storage is not shared" signal."""
    vdis = [db.get("VBD", vbd)["VDI"] for vbd in rec["VBDs"] if not db.get("VBD", vbd)["empty"]]
    vdis.append(rec["suspend_VDI"])
    for vdi in vdis:
        if vdi != NULL_REF and db.exists("VDI", vdi):
            sr = db.get("VDI", vdi)["SR"]
            if not host_sees_sr(db, host, sr):
                raise XapiFailure("VM_REQUIRES_SR", vm, sr)


def vif_networks(db: Database, rec: dict[str, Any]) -> list[str]:
    return [db.get("VIF", vif)["network"] for vif in rec["VIFs"]]


def check_networks(db: Database, vm: str, networks: list[str], host: str) -> None:
    for net in networks:
        if not db.exists("network", net):
            continue
        pifs = db.get("network", net)["PIFs"]
        # A network without any PIF is host-internal and exists everywhere.
        if pifs and not any(db.get("PIF", p)["host"] == host for p in pifs):
            raise XapiFailure("VM_REQUIRES_NETWORK", vm, net)


def needed_memory(rec: dict[str, Any]) -> int:
    """What the destination must have free: the VM ballooned down to dynamic_min, plus the
    domain's overhead."""
    return int(rec["memory_dynamic_min"]) + int(rec["memory_overhead"])


def check_memory(db: Database, rec: dict[str, Any], host: str) -> None:
    metrics = host_metrics(db, host)
    if metrics is None:
        return
    needed, free = needed_memory(rec), int(metrics["memory_free"])
    if needed > free:
        raise XapiFailure("HOST_NOT_ENOUGH_FREE_MEMORY", needed, free)


# -- disks and VIFs ----------------------------------------------------------------------------


@dataclass(slots=True)
class DiskMove:
    vdi: str  # the source VDI
    sr: str  # the destination SR (a ref in the destination pool)
    virtual_size: int
    allocated: int
    snapshot_time: datetime
    new_vdi: str = ""  # the copy, once created


def _vm_disks(db: Database, rec: dict[str, Any]) -> list[str]:
    """VDIs of the VM's non-empty, non-CD VBDs: the ones vdi_map must cover."""
    out: list[str] = []
    for vbd in rec["VBDs"]:
        vbd_rec = db.get("VBD", vbd)
        vdi = vbd_rec["VDI"]
        if vbd_rec["empty"] or vbd_rec["type"] == "CD" or not db.exists("VDI", vdi):
            continue
        if vdi not in out:
            out.append(vdi)
    return out


def _usable_sr(db: Database, sr: str) -> str | None:
    return sr if sr != NULL_REF and db.exists("SR", sr) else None


def validate(
    src_db: Database,
    vm: str,
    rec: dict[str, Any],
    target: Target,
    vdi_map: dict[str, str],
    vif_map: dict[str, str],
    options: dict[str, str],
) -> tuple[list[DiskMove], dict[str, str]]:
    """VM.assert_can_migrate's checks; returns the disks that move and, across pools, the
    destination network of every VIF (snapshots' included)."""
    dst_db, host = target.pool.db, target.host
    force, copy = flag(options, "force"), flag(options, "copy")
    running = rec["power_state"] == "Running"
    for vdi in _vm_disks(src_db, rec):
        if vdi not in vdi_map:
            raise XapiFailure("VDI_NOT_IN_MAP", vdi)
    networks: dict[str, str] = {}
    if not target.cross:
        check_versions_not_decreasing(src_db, rec, host)
        check_srs_support_migration(src_db, dst_db, vdi_map, cross=False)
        if not force:
            check_cpu(src_db, vm, rec, host)
        check_host_usable(src_db, host, localhost=host == rec["resident_on"])
        check_networks(src_db, vm, vif_networks(src_db, rec), host)
        if running:
            check_memory(src_db, rec, host)
        if vif_map:
            raise XapiFailure("OPERATION_NOT_ALLOWED", VIF_MAP_MSG)
        if copy:
            raise XapiFailure("OPERATION_NOT_ALLOWED", COPY_MSG)
    else:
        check_remote_version(src_db, vm, rec, dst_db, host)
        check_srs_support_migration(src_db, dst_db, vdi_map, cross=True)
        if copy and not force and rec["power_state"] != "Halted":
            raise XapiFailure("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
        if not dst_db.get("host", host)["enabled"]:
            raise XapiFailure("HOST_DISABLED", host)
        networks = _map_vifs(src_db, dst_db, rec, vif_map)
        # The dry-run metadata import on the destination.
        if not force:
            check_cpu(dst_db, vm, rec, host)
        check_host_usable(dst_db, host)
        check_networks(dst_db, vm, [networks[v] for v in rec["VIFs"]], host)
        if running:
            check_memory(dst_db, rec, host)
    moves = _plan_disks(src_db, dst_db, vm, rec, vdi_map, host, cross=target.cross)
    for move in moves:
        vdi_rec = src_db.get("VDI", move.vdi)
        if vdi_rec["on_boot"] == "reset":
            raise XapiFailure("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", move.vdi)
        if vdi_rec["cbt_enabled"]:
            raise XapiFailure("VDI_CBT_ENABLED", move.vdi)
        if "key_hash" in vdi_rec["sm_config"]:
            raise XapiFailure("VDI_IS_ENCRYPTED", move.vdi)
    return moves, networks


def _map_vifs(
    src_db: Database, dst_db: Database, rec: dict[str, Any], vif_map: dict[str, str]
) -> dict[str, str]:
    """Every VIF of the VM and its snapshots needs a destination network: its own vif_map
    entry, or that of a mapped VIF with the same MAC."""
    by_mac = {
        src_db.get("VIF", vif)["MAC"]: net
        for vif, net in vif_map.items()
        if src_db.exists("VIF", vif)
    }
    vifs = list(rec["VIFs"])
    for snap in rec["snapshots"]:
        if src_db.exists("VM", snap):
            vifs += src_db.get("VM", snap)["VIFs"]
    out: dict[str, str] = {}
    for vif in vifs:
        net = vif_map.get(vif) or by_mac.get(src_db.get("VIF", vif)["MAC"])
        if net is None:
            raise XapiFailure("VIF_NOT_IN_MAP", vif)
        dst_db.get("network", net)
        out[vif] = net
    return out


def _plan_disks(
    src_db: Database,
    dst_db: Database,
    vm: str,
    rec: dict[str, Any],
    vdi_map: dict[str, str],
    host: str,
    *,
    cross: bool,
) -> list[DiskMove]:
    """The VDIs that move, smallest first (XAPI's order): the VM's disks, its snapshots' disks
    and its suspend image, placed per vdi_map or XAPI's defaults."""
    pool_rec = dst_db.get("pool", dst_db.all_refs("pool")[0]) if dst_db.all_refs("pool") else {}
    default_sr = _usable_sr(dst_db, pool_rec.get("default_SR", NULL_REF))
    chosen = {vdi: vdi_map[vdi] for vdi in _vm_disks(src_db, rec)}
    for snap in rec["snapshots"]:
        if not src_db.exists("VM", snap):
            continue
        for vdi in _vm_disks(src_db, src_db.get("VM", snap)):
            if vdi in chosen:
                continue
            parent = src_db.get("VDI", vdi)["snapshot_of"]
            sr = vdi_map.get(vdi) or chosen.get(parent) or default_sr
            if sr is None:
                raise XapiFailure("VDI_NOT_IN_MAP", vdi)
            chosen[vdi] = sr
    suspend = rec["suspend_VDI"]
    if suspend != NULL_REF and src_db.exists("VDI", suspend):
        sr = (
            vdi_map.get(suspend)
            or _usable_sr(dst_db, pool_rec.get("suspend_image_SR", NULL_REF))
            or _usable_sr(dst_db, dst_db.get("host", host)["suspend_image_sr"])
            or default_sr
        )
        if sr is None:
            raise XapiFailure("VDI_NOT_IN_MAP", suspend)
        chosen[suspend] = sr
    moves: list[DiskMove] = []
    for vdi, sr in chosen.items():
        dst_db.get("SR", sr)
        # The destination host plugs the SR if it can (it needs a PBD for it).
        if not host_sees_sr(dst_db, host, sr, attached=False):
            raise XapiFailure("VM_REQUIRES_SR", vm, sr)
        vdi_rec = src_db.get("VDI", vdi)
        if not cross and vdi_rec["SR"] == sr:
            continue  # intra-pool onto its own SR: not copied
        moves.append(
            DiskMove(
                vdi,
                sr,
                int(vdi_rec["virtual_size"]),
                int(vdi_rec["physical_utilisation"]),
                vdi_rec["snapshot_time"] or EPOCH,
            )
        )
    moves.sort(key=lambda m: (m.virtual_size, m.snapshot_time))
    return moves
