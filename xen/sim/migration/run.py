"""One running migration: its timed phases (xapi.md 6.3), its commit and its rollback.

The phases sleep simulated time through the call context, so `task.cancel` is honoured
exactly where XAPI honours it, and task progress follows XAPI's shape (storage progress, then
a restart at 0 for the memory copy). Every side effect is a database write, hence an event.
All final state changes happen in one synchronous step at the end; any failure (injected
fault, cancel, the simulator stopping) rolls back what the phases created.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from xen.sim import timing as phases
from xen.sim.build import refresh_host_memory, vm_allowed_operations
from xen.sim.consoles import move_consoles, open_consoles
from xen.sim.db import NULL_REF, Database, now
from xen.sim.migration.checks import (
    DiskMove,
    Target,
    host_live,
    host_metrics,
    host_sees_sr,
    needed_memory,
)
from xen.sim.registry import CallContext, Timing, XapiFailure

log = logging.getLogger(__name__)

MAX_STORAGE_MIGRATES = 3  # per source host (xapi `with_migrate`)

# Per (id of a pool's Database, host ref), while migrations run (so a key never outlives its
# database): storage migrations in flight from that host (op keys), and memory reserved on it
# for incoming VMs (op key -> bytes).
_storage_migrates: dict[tuple[int, str], set[str]] = {}
_reservations: dict[tuple[int, str], dict[str, int]] = {}


def _refresh_memory(db: Database, host: str) -> None:
    """memory_free as the lab computes it (total - resident VMs), minus what in-flight
    migrations have reserved on the host."""
    if not db.exists("host", host):
        return
    refresh_host_memory(db, host)
    reserved = sum(_reservations.get((id(db), host), {}).values())
    metrics = host_metrics(db, host)
    if reserved and metrics is not None:
        free = max(0, int(metrics["memory_free"]) - reserved)
        db.update("host_metrics", db.get("host", host)["metrics"], memory_free=free)


def _reserve_memory(db: Database, host: str, key: str, amount: int) -> None:
    _reservations.setdefault((id(db), host), {})[key] = amount
    _refresh_memory(db, host)


def _release_memory(db: Database, host: str, key: str) -> None:
    slot = (id(db), host)
    held = _reservations.get(slot, {})
    if held.pop(key, None) is not None:
        if not held:
            _reservations.pop(slot, None)
        _refresh_memory(db, host)


# -- a running migration -----------------------------------------------------------------------


def _portable(db: Database, cls: str, rec: dict[str, Any]) -> dict[str, Any]:
    """A record's values minus everything that points at other objects (refs, ref sets, maps
    keyed or valued by refs) and in-flight state: what can be copied to a new object."""
    out: dict[str, Any] = {}
    for name, spec in db.schema.cls(cls).fields.items():
        kind = spec.kind
        if kind == "ref":
            out[name] = NULL_REF
        elif kind in ("set", "map") and "ref" in spec.type:
            out[name] = type(spec.default)()
        else:
            out[name] = rec[name]
    if "current_operations" in out:
        out["current_operations"] = {}
    return out


@dataclass(eq=False)
class Migration:
    """One VM's migration: its state, its timed phases, its commit and its rollback."""

    ctx: CallContext
    vm: str
    op: str  # "pool_migrate" | "migrate_send"
    key: str  # the current_operations key: the task ref
    name: str
    uuid: str
    power_state: str
    source_host: str
    dest: Target | None = None
    copy: bool = False
    disks: list[DiskMove] = field(default_factory=list)
    networks: dict[str, str] = field(default_factory=dict)
    reserved: bool = False  # memory is reserved for the VM on the destination host
    scheduled: bool = False  # VM.scheduled_to_be_resident_on was set
    host_op: bool = False  # destination host current_operations has our key
    remote_vm: str = ""  # cross-pool: the VM imported into the destination
    created: list[tuple[Database, str, str]] = field(default_factory=list)
    sr_changes: list[tuple[Database, str, int, int]] = field(default_factory=list)
    gate: tuple[int, str] | None = None

    @classmethod
    def begin(cls, ctx: CallContext, vm: str, op: str) -> Migration:
        """`with_vm_operation`: record the op on the VM, make the task cancellable."""
        db = ctx.db
        rec = db.get("VM", vm)
        source = rec["resident_on"]
        if not db.exists("host", source):
            source = ctx.pool.master_ref
        run = cls(
            ctx=ctx,
            vm=vm,
            op=op,
            key=ctx.task or db.ids.ref(),
            name=rec["name_label"],
            uuid=rec["uuid"],
            power_state=rec["power_state"],
            source_host=source,
        )
        ctx.set_cancellable(True)
        db.map_set("VM", vm, "current_operations", run.key, op)
        db.update("VM", vm, allowed_operations=vm_allowed_operations(db.get("VM", vm)))
        log.info("event=migration_start vm=%s op=%s task=%s", run.uuid, op, run.key)
        return run

    @property
    def running(self) -> bool:
        return self.power_state == "Running"

    @property
    def src_db(self) -> Database:
        return self.ctx.db

    @property
    def dst(self) -> Target:
        assert self.dest is not None
        return self.dest

    def target(self, dest: Target) -> None:
        self.dest = dest

    # -- dispatch-time bookkeeping ---------------------------------------------------------

    def reserve(self) -> None:
        """Reserve the destination's memory for a live VM (`reserve_memory_for_vm`)."""
        if not self.running:
            return
        dst = self.dst
        needed = needed_memory(self.src_db.get("VM", self.vm))
        _reserve_memory(dst.pool.db, dst.host, self.key, needed)
        self.reserved = True
        if not dst.cross:
            self.src_db.update("VM", self.vm, scheduled_to_be_resident_on=dst.host)
            self.scheduled = True
        dst.pool.db.map_set("host", dst.host, "current_operations", self.key, "vm_migrate")
        self.host_op = True

    def check_source_live(self) -> None:
        """The call is forwarded to the host the VM runs on: it must answer."""
        if self.running and not host_live(self.src_db, self.source_host):
            raise XapiFailure("HOST_OFFLINE", self.source_host)

    def enter_storage_gate(self) -> None:
        gate = (id(self.src_db), self.source_host)
        active = _storage_migrates.setdefault(gate, set())
        if len(active) >= MAX_STORAGE_MIGRATES:
            raise XapiFailure("TOO_MANY_STORAGE_MIGRATES", MAX_STORAGE_MIGRATES)
        active.add(self.key)
        self.gate = gate

    def leave_storage_gate(self) -> None:
        if self.gate is None:
            return
        active = _storage_migrates.get(self.gate, set())
        active.discard(self.key)
        if not active:
            _storage_migrates.pop(self.gate, None)
        self.gate = None

    # -- timed phases ----------------------------------------------------------------------

    @property
    def timing(self) -> Timing:
        return self.ctx.pool.timing

    def inject(self, phase: str) -> None:
        """Raise the lab's (or a test's) fault for this VM in this phase, if any."""
        for key in (self.name, self.uuid):
            fault = self.ctx.pool.find_fault("migration", vm=key, phase=phase)
            if fault is not None:
                log.info(
                    "event=migration_fault vm=%s phase=%s code=%s", self.uuid, phase, fault.code
                )
                raise XapiFailure(fault.code or "INTERNAL_ERROR", *fault.params)

    async def advance(self, seconds: float, start: float, end: float) -> None:
        """Spend `seconds` of simulated time moving the task progress from start to end,
        updating it every `progress_interval_s`."""
        interval = max(1e-3, float(self.timing.progress_interval_s))
        self.ctx.set_progress(start)
        elapsed = 0.0
        while elapsed < seconds:
            step = min(interval, seconds - elapsed)
            await self.ctx.sleep(step)
            elapsed += step
            self.ctx.set_progress(start + (end - start) * min(1.0, elapsed / seconds))
        self.ctx.set_progress(end)

    async def dispatch_phase(self, spent: float = 0.0) -> None:
        """Checks and reservation; `spent`: simulated seconds the checks already took."""
        await self.advance(max(0.0, self.timing.dispatch_s - spent), 0.0, 0.0)
        self.inject("dispatch")

    async def disk_phase(self) -> None:
        """Per VDI: set up (a new VDI appears in the destination SR), then copy its
        allocated bytes; progress is weighted by virtual size (xapi.md 6.1)."""
        total = sum(m.virtual_size for m in self.disks)
        if not self.disks:
            self.inject("disks")
        with self.traffic(phases.copy_rate(self.timing)) if self.disks else _nothing():
            await self._copy_disks(total)

    async def _copy_disks(self, total: int) -> None:
        timing = self.timing
        so_far = 0.0
        for index, move in enumerate(self.disks):
            self.ctx.check_cancelled()
            weight = move.virtual_size / total if total else 1 / len(self.disks)
            self.create_copy(move)
            await self.advance(timing.vdi_setup_s, so_far, so_far + 0.05 * weight)
            if index == 0:
                self.inject("disks")
            await self.advance(
                phases.vdi_copy_seconds(timing, move.allocated),
                so_far + 0.05 * weight,
                so_far + 0.95 * weight,
            )
            self.copy_done(move)
            so_far += weight
            self.ctx.set_progress(so_far)

    async def metadata_phase(self) -> None:
        self.import_vm()
        await self.ctx.sleep(self.timing.metadata_import_s)
        self.inject("metadata")

    async def memory_phase(self) -> None:
        """xenopsd's VM_save: progress restarts at 0 and climbs to 10/11; cancellable."""
        timing = self.timing
        vm_rec = self.src_db.get("VM", self.vm)
        seconds = timing.memory_setup_s + phases.memory_copy_seconds(
            timing, int(vm_rec["memory_dynamic_min"])
        )
        self.ctx.set_cancellable(True)
        half = phases.MEMORY_PHASE_END / 2
        with self.traffic(min(timing.link_rate, timing.mem_rate)):
            await self.advance(seconds / 2, 0.0, half)
            self.inject("memory")
            await self.advance(seconds / 2, half, phases.MEMORY_PHASE_END)

    # -- network traffic, for the hosts' stats ----------------------------------------------

    @contextmanager
    def traffic(self, rate: float) -> Iterator[None]:
        """While a copy runs: the source host's NIC sends at `rate`, the destination's
        receives (on the network migrate_receive chose; management for pool_migrate)."""
        dst = self.dst
        dst_device, network = _nic(dst.pool.db, dst.host, dst.address)
        src_device = _nic_like(self.src_db, self.source_host, network, dst_device, dst.cross)
        sending = self.ctx.pool.activity.begin(self.source_host, src_device, "tx", rate)
        receiving = dst.pool.activity.begin(dst.host, dst_device, "rx", rate)
        try:
            yield
        finally:
            self.ctx.pool.activity.end(sending)
            dst.pool.activity.end(receiving)

    async def switch_phase(self) -> None:
        """Stop-and-copy: the guest is paused for the last pages; no way back from here."""
        self.ctx.set_cancellable(False)
        await self.advance(self.timing.switch_s, phases.MEMORY_PHASE_END, 1.0)

    async def finalise(self) -> str:
        self.ctx.set_cancellable(False)
        self.inject("finalise")
        self.ctx.set_progress(1.0)
        await self.ctx.sleep(self.timing.finalise_s)
        # Everything below is synchronous: the outcome lands as one burst of events.
        result = self.commit_cross() if self.dst.cross else self.commit_intra()
        log.info(
            "event=migration_done vm=%s op=%s task=%s cross=%s",
            self.uuid,
            self.op,
            self.key,
            self.dst.cross,
        )
        return result

    # -- disks -----------------------------------------------------------------------------

    def create_copy(self, move: DiskMove) -> None:
        dst_db = self.dst.pool.db
        sr = dst_db.get("SR", move.sr)
        size, used = int(sr["physical_size"]), int(sr["physical_utilisation"])
        if size > 0 and size - used < move.allocated:
            raise XapiFailure("SR_BACKEND_FAILURE_44", "", "There is insufficient space", "")
        src_rec = self.src_db.get("VDI", move.vdi)
        values = _portable(self.src_db, "VDI", src_rec)
        location = dst_db.ids.uuid()
        values.update(
            uuid=dst_db.ids.uuid(),
            SR=move.sr,
            location=location,
            physical_utilisation=0,
            cbt_enabled=False,
        )
        move.new_vdi = dst_db.create("VDI", **values)
        self.created.append((dst_db, "VDI", move.new_vdi))

    def copy_done(self, move: DiskMove) -> None:
        dst_db = self.dst.pool.db
        dst_db.update("VDI", move.new_vdi, physical_utilisation=move.allocated)
        self._account(dst_db, move.sr, move.allocated, move.virtual_size)

    def _account(self, db: Database, sr: str, allocated: int, virtual: int) -> None:
        if not db.exists("SR", sr):
            return
        rec = db.get("SR", sr)
        db.update(
            "SR",
            sr,
            physical_utilisation=max(0, int(rec["physical_utilisation"]) + allocated),
            virtual_allocation=max(0, int(rec["virtual_allocation"]) + virtual),
        )
        self.sr_changes.append((db, sr, allocated, virtual))

    def _link_snapshot_vdis(self, db: Database) -> dict[str, str]:
        """Point each copied VDI's snapshot_of at its parent's copy (or its parent)."""
        remap = {m.vdi: m.new_vdi for m in self.disks}
        for move in self.disks:
            parent = self.src_db.get("VDI", move.vdi)["snapshot_of"]
            new_parent = remap.get(parent) or (parent if db is self.src_db else NULL_REF)
            if db.exists("VDI", new_parent):
                db.update("VDI", move.new_vdi, snapshot_of=new_parent)
        return remap

    def _drop_source_vdis(self) -> None:
        for move in self.disks:
            if self.src_db.exists("VDI", move.vdi):
                rec = self.src_db.get("VDI", move.vdi)
                sr = rec["SR"]
                self.src_db.delete("VDI", move.vdi)
                self._account(self.src_db, sr, -move.allocated, -move.virtual_size)

    # -- cross-pool metadata -----------------------------------------------------------------

    def import_vm(self) -> None:
        """The VM's metadata arrives in the destination: same uuid (unless copying), Halted,
        VBDs on the copied VDIs, VIFs on the mapped networks; snapshots too."""
        self.remote_vm = self._import_one(self.vm, NULL_REF)
        for snap in self.src_db.get("VM", self.vm)["snapshots"]:
            if self.src_db.exists("VM", snap):
                self._import_one(snap, self.remote_vm)
        suspend = self.src_db.get("VM", self.vm)["suspend_VDI"]
        remap = {m.vdi: m.new_vdi for m in self.disks}
        if suspend in remap:
            self.dst.pool.db.update("VM", self.remote_vm, suspend_VDI=remap[suspend])

    def _import_one(self, vm: str, snapshot_of: str) -> str:
        src_db, dst_db = self.src_db, self.dst.pool.db
        rec = src_db.get("VM", vm)
        remap = {m.vdi: m.new_vdi for m in self.disks}
        values = _portable(src_db, "VM", rec)
        values.update(power_state="Halted", domid=-1, snapshot_of=snapshot_of)
        if self.copy:
            values["uuid"] = dst_db.ids.uuid()
        if vm == self.vm:
            values["allowed_operations"] = []
            values["current_operations"] = {self.key: "import"}
        new = dst_db.create("VM", **values)
        self.created.append((dst_db, "VM", new))
        for cls, name in (("VM_metrics", "metrics"), ("VM_guest_metrics", "guest_metrics")):
            if src_db.exists(cls, rec[name]):
                copy = _portable(src_db, cls, src_db.get(cls, rec[name]))
                copy["uuid"] = dst_db.ids.uuid()
                ref = dst_db.create(cls, **copy)
                self.created.append((dst_db, cls, ref))
                dst_db.update("VM", new, **{name: ref})
        for vbd in rec["VBDs"]:
            vbd_rec = src_db.get("VBD", vbd)
            values = _portable(src_db, "VBD", vbd_rec)
            vdi = remap.get(vbd_rec["VDI"], NULL_REF)
            values.update(
                uuid=dst_db.ids.uuid(),
                VM=new,
                VDI=vdi,
                empty=vdi == NULL_REF,
                currently_attached=False,
            )
            ref = dst_db.create("VBD", **values)
            self.created.append((dst_db, "VBD", ref))
        for vif in rec["VIFs"]:
            values = _portable(src_db, "VIF", src_db.get("VIF", vif))
            values.update(
                uuid=dst_db.ids.uuid(),
                VM=new,
                network=self.networks.get(vif, NULL_REF),
                currently_attached=False,
            )
            ref = dst_db.create("VIF", **values)
            self.created.append((dst_db, "VIF", ref))
        return new

    # -- commit ----------------------------------------------------------------------------

    def _settle_memory(self, old_host: str) -> None:
        """The reservation becomes the VM's own footprint on the destination (the VM is
        resident there now); the source host gets the VM's memory back."""
        _release_memory(self.dst.pool.db, self.dst.host, self.key)
        self.reserved = False
        _refresh_memory(self.dst.pool.db, self.dst.host)
        _refresh_memory(self.src_db, old_host)

    def _clear_host_op(self) -> None:
        if self.host_op:
            dst_db = self.dst.pool.db
            if dst_db.exists("host", self.dst.host):
                dst_db.map_remove("host", self.dst.host, "current_operations", self.key)
            self.host_op = False

    def commit_intra(self) -> str:
        db, host, vm = self.src_db, self.dst.host, self.vm
        remap = self._link_snapshot_vdis(db)
        for old, new in remap.items():
            old_rec = db.get("VDI", old)
            for vbd in list(old_rec["VBDs"]):
                db.update("VBD", vbd, VDI=new)
            for child in list(old_rec["snapshots"]):
                if child not in remap:
                    db.update("VDI", child, snapshot_of=new)
        rec = db.get("VM", vm)
        if rec["suspend_VDI"] in remap:
            db.update("VM", vm, suspend_VDI=remap[rec["suspend_VDI"]])
        self._eject_unreachable_cds(rec, host)
        self._drop_source_vdis()
        old_host = rec["resident_on"]
        if self.running:
            db.update("VM", vm, resident_on=host, domid=_next_domid(db))
            move_consoles(db, vm, db.get("host", host)["address"])
            self._settle_memory(old_host)
        db.update("VM", vm, scheduled_to_be_resident_on=NULL_REF)
        self.scheduled = False
        self._release_vm()
        self._clear_host_op()
        if self.running:
            self._post_migrated_message(old_host, host)
        self.created.clear()
        return vm

    def _eject_unreachable_cds(self, rec: dict[str, Any], host: str) -> None:
        db = self.src_db
        for vbd in rec["VBDs"]:
            vbd_rec = db.get("VBD", vbd)
            vdi = vbd_rec["VDI"]
            if vbd_rec["type"] != "CD" or vbd_rec["empty"] or not db.exists("VDI", vdi):
                continue
            if not host_sees_sr(db, host, db.get("VDI", vdi)["SR"]):
                db.update("VBD", vbd, VDI=NULL_REF, empty=True)

    def commit_cross(self) -> str:
        src_db, dst_db = self.src_db, self.dst.pool.db
        remote, host = self.remote_vm, self.dst.host
        self._link_snapshot_vdis(dst_db)
        src_rec = src_db.get("VM", self.vm)
        state: dict[str, Any] = {"power_state": self.power_state, "current_operations": {}}
        if self.running:
            state.update(resident_on=host, domid=_next_domid(dst_db))
        dst_db.update("VM", remote, **state)
        dst_db.update(
            "VM", remote, allowed_operations=vm_allowed_operations(dst_db.get("VM", remote))
        )
        if self.running:
            remote_rec = dst_db.get("VM", remote)
            for vbd in remote_rec["VBDs"]:
                if not dst_db.get("VBD", vbd)["empty"]:
                    dst_db.update("VBD", vbd, currently_attached=True)
            for vif in remote_rec["VIFs"]:
                dst_db.update("VIF", vif, currently_attached=True)
            open_consoles(dst_db, remote, dst_db.get("host", host)["address"])
        self._clear_host_op()
        self.created.clear()
        old_host = src_rec["resident_on"]
        if self.copy:
            self._release_vm()
        else:
            for snap in list(src_rec["snapshots"]):
                _destroy_vm(src_db, snap)
            _destroy_vm(src_db, self.vm)
            self._drop_source_vdis()
        if self.running:
            self._settle_memory(old_host)
        return remote

    def _release_vm(self) -> None:
        db = self.src_db
        if db.exists("VM", self.vm):
            db.map_remove("VM", self.vm, "current_operations", self.key)
            allowed = vm_allowed_operations(db.get("VM", self.vm))
            db.update("VM", self.vm, allowed_operations=allowed)

    def _post_migrated_message(self, old_host: str, new_host: str) -> None:
        db = self.src_db

        def name(host: str) -> str:
            return str(db.get("host", host)["name_label"]) if db.exists("host", host) else host

        db.create(
            "message",
            name="VM_MIGRATED",
            priority=5,
            cls="VM",
            obj_uuid=self.uuid,
            timestamp=now(),
            body=f"VM '{self.name}' migrated from host '{name(old_host)}' to '{name(new_host)}'",
        )

    # -- rollback --------------------------------------------------------------------------

    def rollback(self, exc: BaseException) -> None:
        """Undo everything: the VM keeps running on the source as if nothing happened."""
        for db, cls, ref in reversed(self.created):
            if db.exists(cls, ref):
                db.delete(cls, ref)
        self.created.clear()
        for db, sr, allocated, virtual in reversed(self.sr_changes):
            if db.exists("SR", sr):
                rec = db.get("SR", sr)
                db.update(
                    "SR",
                    sr,
                    physical_utilisation=max(0, int(rec["physical_utilisation"]) - allocated),
                    virtual_allocation=max(0, int(rec["virtual_allocation"]) - virtual),
                )
        self.sr_changes.clear()
        if self.reserved and self.dest is not None:
            _release_memory(self.dest.pool.db, self.dest.host, self.key)
            self.reserved = False
        if self.scheduled and self.src_db.exists("VM", self.vm):
            self.src_db.update("VM", self.vm, scheduled_to_be_resident_on=NULL_REF)
            self.scheduled = False
        if self.dest is not None:
            self._clear_host_op()
        self._release_vm()
        code = exc.code if isinstance(exc, XapiFailure) else type(exc).__name__
        log.info(
            "event=migration_rolled_back vm=%s op=%s task=%s error=%s",
            self.uuid,
            self.op,
            self.key,
            code,
        )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _nic(db: Database, host: str, address: str) -> tuple[str, str]:
    """(device, network) of the host's PIF with `address`, else of its management PIF."""
    pifs = [db.get("PIF", p) for p in db.get("host", host)["PIFs"]]
    pif = next((p for p in pifs if address and p["IP"] == address), None)
    pif = pif or next((p for p in pifs if p["management"]), None)
    return (str(pif["device"]), str(pif["network"])) if pif else ("eth0", NULL_REF)


def _nic_like(db: Database, host: str, network: str, device: str, cross: bool) -> str:
    """The sending NIC: on the same network within a pool, the same device across pools
    (else the management one)."""
    if not db.exists("host", host):
        return device
    pifs = [db.get("PIF", p) for p in db.get("host", host)["PIFs"]]
    same = next((p for p in pifs if (p["device"] == device if cross else p["network"] == network)),
                None)  # fmt: skip
    same = same or next((p for p in pifs if p["management"]), None)
    return str(same["device"]) if same else device


def _next_domid(db: Database) -> int:
    return max((int(r["domid"]) for _, r in db.iter_records("VM")), default=0) + 1


def _destroy_vm(db: Database, vm: str) -> None:
    """Delete a VM with its devices and metrics (not its VDIs)."""
    if not db.exists("VM", vm):
        return
    rec = db.get("VM", vm)
    for cls, name in (
        ("VBD", "VBDs"),
        ("VIF", "VIFs"),
        ("console", "consoles"),
        ("VTPM", "VTPMs"),
        ("crashdump", "crash_dumps"),
    ):
        db.bulk_delete(cls, rec[name])
    for cls, name in (("VM_metrics", "metrics"), ("VM_guest_metrics", "guest_metrics")):
        if db.exists(cls, rec[name]):
            db.delete(cls, rec[name])
    db.delete("VM", vm)
