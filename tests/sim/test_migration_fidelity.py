"""Simulator fidelity details of migrations (xapi.md 3.3-3.5, 4.1, 4.2, 5): the task of a
synchronous call, the `VM.assert_can_migrate` subtask, the rarer refusals and their lab
switches, the pool heartbeat. Driven through the official XenAPI binding over real sockets;
state XAPI cannot set (PCI devices, PBD plugs) is arranged in the pool database."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.conftest import SIM_TIME_SCALE
from tests.sim.test_migration_support import (
    NULL,
    Xapi,
    decode_result,
    disks_of,
    host_ref,
    master,
    net_ref,
    receive,
    sr_ref,
    vifs_of,
    vm_ref,
)
from xen.sim import Simulator
from xen.sim.db import Database
from xen.sim.lab import DEFAULT_LAB, LabError, load_lab, parse_lab

pytestmark = pytest.mark.timeout(60)

Doc = dict[str, Any]


@asynccontextmanager
async def lab_sim(edit: Callable[[Doc], None]) -> AsyncIterator[Simulator]:
    """A simulator on the default lab file as edited by `edit` (the parsed TOML document)."""
    with DEFAULT_LAB.open("rb") as fh:
        doc = tomllib.load(fh)
    edit(doc)
    sim = Simulator(parse_lab(doc), port=0, time_scale=SIM_TIME_SCALE)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def pool_doc(doc: Doc, name: str) -> Doc:
    return next(p for p in doc["pools"] if p["name"] == name)


def entry(items: list[Doc], name: str) -> Doc:
    return next(i for i in items if i["name"] == name)


def own_sr_map(sim: Simulator, vm: str) -> dict[str, str]:
    """vdi_map keeping every disk on its SR (intra-pool: nothing is copied)."""
    db = sim.pool("Pool A").db
    return {d: db.get("VDI", d)["SR"] for d in disks_of(sim.pool("Pool A"), vm)}


# -- 1. synchronous calls run under a task -----------------------------------------------------


def watch_tasks(x: Xapi, token: str, until: Callable[[list[Doc]], bool]) -> list[Doc]:
    """Every task event event.from delivers from `token` until `until(events)` holds."""
    assert x.session is not None
    events: list[Doc] = []
    while not until(events):
        batch = x.session.xenapi.event_from(["task"], token, 5.0)
        assert batch["events"], f"no task event within 5 s; seen {events}"
        token = batch["token"]
        events += batch["events"]
    return events


async def test_sync_pool_migrate_runs_under_a_short_lived_task(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    pool.event_batch_delay_s = 0.005
    sim.timing.time_scale = 0.03  # web-01: ~10 simulated s, about 0.3 s here
    vm, a2 = vm_ref(pool, "web-01"), host_ref(pool, "a2")
    async with (
        Xapi(master(sim, "Pool A")) as x,
        Xapi(master(sim, "Pool A")) as watcher,
        Xapi(master(sim, "Pool A")) as probe,
    ):
        token = (await watcher("event_from", ["task"], "", 0.0))["token"]

        def task_gone(events: list[Doc]) -> bool:
            return any(e["operation"] == "del" for e in events)

        watching = asyncio.ensure_future(asyncio.to_thread(watch_tasks, watcher, token, task_gone))
        call = asyncio.ensure_future(x("VM.pool_migrate", vm, a2, {}))
        while not (ops := await probe("VM.get_current_operations", vm)):
            assert not call.done(), "the call ended before its operation was seen"
        (key,) = ops
        assert ops[key] == "pool_migrate"
        # The key is a real task, named after the message (no "Async." prefix).
        task = await probe("task.get_record", key)
        assert task["name_label"] == "VM.pool_migrate" and task["status"] == "pending"
        assert task["subtask_of"] == NULL
        assert await call == ""  # void
        events = await asyncio.wait_for(watching, 10)
        # Seen coming and going (with its progress `mod`s in between).
        assert {e["ref"] for e in events} == {key}
        assert events[0]["operation"] == "add" and events[-1]["operation"] == "del"
        assert events[0]["snapshot"]["name_label"] == "VM.pool_migrate"
        # Destroyed with the call: nothing is left over.
        assert await probe.fails("task.get_record", key) == ["HANDLE_INVALID", "task", key]
        assert await probe("VM.get_current_operations", vm) == {}
        assert await probe("VM.get_resident_on", vm) == a2


async def test_sync_call_task_is_cancellable_and_async_unchanged(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    sim.timing.time_scale = 0.05
    vm, a3 = vm_ref(pool, "runner-01"), host_ref(pool, "a3")
    async with Xapi(master(sim, "Pool A")) as x, Xapi(master(sim, "Pool A")) as probe:
        call = asyncio.ensure_future(x.fails("VM.pool_migrate", vm, a3, {}))
        while not (ops := await probe("VM.get_current_operations", vm)):
            assert not call.done()
        (key,) = ops
        await probe("task.cancel", key)
        # A cancelled synchronous call fails with TASK_CANCELLED [its task] (xapi.md 3.7).
        assert await asyncio.wait_for(call, 10) == ["TASK_CANCELLED", key]
        assert await probe("VM.get_resident_on", vm) == host_ref(pool, "a2")
        assert await probe.fails("task.get_record", key) == ["HANDLE_INVALID", "task", key]
        # Async.* still hands out its own task, labelled with the wire name, kept until
        # destroyed.
        sim.timing.time_scale = SIM_TIME_SCALE
        task = await x("Async.VM.pool_migrate", vm, a3, {})
        rec = await x.wait(task)
        assert rec["name_label"] == "Async.VM.pool_migrate" and rec["status"] == "success"
        # Getters, setters and other messages without an async form make no task at all.
        before = pool.db.generation
        await x("VM.get_record", vm)
        await x("task.get_all")
        assert pool.db.generation == before


# -- 2. the VM.assert_can_migrate subtask --------------------------------------------------------


async def test_assert_can_migrate_subtask_is_seen_by_watchers(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    pool.event_batch_delay_s = 0.005
    sim.timing.assert_s = sim.timing.dispatch_s = 10.0  # 0.2 s at the scale below
    sim.timing.time_scale = 0.02
    vm, a3 = vm_ref(pool, "web-02"), host_ref(pool, "a3")
    async with Xapi(master(sim, "Pool A")) as x, Xapi(master(sim, "Pool A")) as watcher:
        token = (await watcher("event_from", ["task"], "", 0.0))["token"]
        task = await x("Async.VM.migrate_send", vm, {"host": a3}, True, own_sr_map(sim, vm), {}, {})

        def done(events: list[Doc]) -> bool:
            return any(
                e["ref"] == task
                and e["operation"] == "mod"
                and e["snapshot"]["status"] != "pending"
                for e in events
            )

        events = await asyncio.wait_for(asyncio.to_thread(watch_tasks, watcher, token, done), 20)
    subtasks = [e for e in events if e["operation"] == "add" and e["ref"] != task]
    assert len(subtasks) == 1, events
    sub = subtasks[0]
    assert sub["snapshot"]["name_label"] == "VM.assert_can_migrate"
    assert sub["snapshot"]["subtask_of"] == task
    ops = [(e["operation"], e["ref"]) for e in events]
    assert ops.index(("add", sub["ref"])) < ops.index(("del", sub["ref"]))
    # The parent listed it while it lived.
    assert any(
        e["ref"] == task and sub["ref"] in e["snapshot"]["subtasks"]
        for e in events
        if e["operation"] != "del"
    )
    final = next(e for e in reversed(events) if e["ref"] == task)
    assert final["snapshot"]["status"] == "success"


# -- 3. rarer refusals, reproducible from the lab file --------------------------------------------


async def test_hvm_guest_without_pv_drivers_lacks_feature() -> None:
    def edit(doc: Doc) -> None:
        pool_doc(doc, "Pool A")["vms"].append(
            {
                "name": "no-tools",
                "host": "a1",
                "power_state": "Running",
                "memory_gib": 1,
                "pv_drivers": False,
                "disks": [{"sr": "A shared NFS", "size_gib": 8}],
            }
        )

    async with lab_sim(edit) as sim, Xapi(master(sim, "Pool A")) as x:
        pool = sim.pool("Pool A")
        vm, a2 = vm_ref(pool, "no-tools"), host_ref(pool, "a2")
        assert await x("VM.get_guest_metrics", vm) == NULL
        vdi_map = own_sr_map(sim, vm)
        assert await x.fails("VM.pool_migrate", vm, a2, {}) == ["VM_LACKS_FEATURE", vm]
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            error = await x.fails(call, vm, {"host": a2}, True, vdi_map, {}, {})
            assert error == ["VM_LACKS_FEATURE", vm]
        # A guest that reports why it cannot suspend.
        web = vm_ref(pool, "web-01")
        gm = pool.db.get("VM", web)["guest_metrics"]
        other = {**pool.db.get("VM_guest_metrics", gm)["other"]}
        pool.db.update("VM_guest_metrics", gm, other={**other, "data-cant-suspend-reason": "gpu"})
        assert await x.fails("VM.pool_migrate", web, a2, {}) == ["VM_NON_SUSPENDABLE", web, "gpu"]
        # force skips the feature check.
        task = await x("Async.VM.pool_migrate", vm, a2, {"force": "true"})
        assert (await x.wait(task))["status"] == "success"


async def test_rolling_upgrade_refuses_older_destinations() -> None:
    def edit(doc: Doc) -> None:
        a3 = entry(pool_doc(doc, "Pool A")["hosts"], "a3")
        a3.update(platform_version="3.2.1", product_version="8.2.1", api_version_minor=20)

    async with lab_sim(edit) as sim, Xapi(master(sim, "Pool A")) as x:
        pool = sim.pool("Pool A")
        a2, a3 = host_ref(pool, "a2"), host_ref(pool, "a3")
        versions = await x("host.get_software_version", a3)
        assert versions["platform_version"] == "3.2.1" and versions["product_version"] == "8.2.1"
        assert await x("host.get_API_version_minor", a3) == "20"
        runner = vm_ref(pool, "runner-01")  # on a2 (newer)
        assert await x.fails("VM.pool_migrate", runner, a3, {}) == ["NOT_SUPPORTED_DURING_UPGRADE"]
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            error = await x.fails(call, runner, {"host": a3}, True, own_sr_map(sim, runner), {}, {})
            assert error == ["NOT_SUPPORTED_DURING_UPGRADE"]
        assert await x("VM.get_current_operations", runner) == {}
        # Onto a newer host is what a rolling upgrade does: allowed.
        old = vm_ref(pool, "runner-02")  # on a3 (older)
        task = await x("Async.VM.pool_migrate", old, a2, {})
        assert (await x.wait(task))["status"] == "success"


async def test_cross_pool_destination_older_than_source() -> None:
    def edit(doc: Doc) -> None:
        entry(pool_doc(doc, "Pool B")["hosts"], "b1")["platform_version"] = "3.3.0"

    async with lab_sim(edit) as sim, Xapi(master(sim, "Pool A")) as x:
        a, b = sim.pool("Pool A"), sim.pool("Pool B")
        runner = vm_ref(a, "runner-01")
        vdi_map = {d: sr_ref(b, "B shared iSCSI") for d in disks_of(a, runner)}
        vif_map = {v: net_ref(b, "B management") for v in vifs_of(a, runner)}
        dest_b1 = await receive(sim, "Pool B", "b1", "B management")
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            error = await x.fails(call, runner, dest_b1, True, vdi_map, vif_map, {})
            assert error == ["VM_HOST_INCOMPATIBLE_VERSION_MIGRATE", runner, dest_b1["host"]]
        # b2 runs the same version as the source: only its older CPU needs force.
        dest_b2 = await receive(sim, "Pool B", "b2", "B management")
        await x("VM.assert_can_migrate", runner, dest_b2, True, vdi_map, vif_map, {"force": "1"})


async def test_srs_without_mirror_refuse_storage_motion() -> None:
    def edit(doc: Doc) -> None:
        pool_a = pool_doc(doc, "Pool A")
        pool_a["srs"].append(
            {"name": "A tape a1", "type": "udev", "host": "a1", "size_gib": 100, "mirror": False}
        )
        pool_a["vms"].append(
            {
                "name": "iso-disk",
                "host": "a1",
                "power_state": "Running",
                "memory_gib": 1,
                "disks": [{"sr": "A ISO library", "size_gib": 1}],
            }
        )

    async with lab_sim(edit) as sim, Xapi(master(sim, "Pool A")) as x:
        a, b = sim.pool("Pool A"), sim.pool("Pool B")
        tape, iso = sr_ref(a, "A tape a1"), sr_ref(a, "A ISO library")
        caps = {r["type"]: r["capabilities"] for r in (await x("SM.get_all_records")).values()}
        assert "VDI_MIRROR" not in caps["udev"] and "VDI_MIRROR" in caps["ext"]
        assert "vdi_mirror" not in await x("SR.get_allowed_operations", tape)
        # To an SR that cannot take a mirror.
        web, a1 = vm_ref(a, "web-01"), host_ref(a, "a1")
        (vdi,) = disks_of(a, web)
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            error = await x.fails(call, web, {"host": a1}, True, {vdi: tape}, {}, {})
            assert error == ["SR_DOES_NOT_SUPPORT_MIGRATION", tape, "VDI_SNAPSHOT;VDI_MIRROR_IN"]
        # From an SR that cannot mirror (an ISO SR), within the pool and across pools.
        vm = vm_ref(a, "iso-disk")
        (iso_vdi,) = disks_of(a, vm)
        shared = sr_ref(a, "A shared NFS")
        error = await x.fails("VM.migrate_send", vm, {"host": a1}, True, {iso_vdi: shared}, {}, {})
        assert error == ["SR_DOES_NOT_SUPPORT_MIGRATION", iso, "VDI_SNAPSHOT;VDI_MIRROR"]
        dest = await receive(sim, "Pool B", "b1", "B management")
        vif_map = {v: net_ref(b, "B management") for v in vifs_of(a, vm)}
        b_shared = sr_ref(b, "B shared iSCSI")
        error = await x.fails(
            "VM.assert_can_migrate", vm, dest, True, {iso_vdi: b_shared}, vif_map, {}
        )
        assert error == ["SR_DOES_NOT_SUPPORT_MIGRATION", iso, "VDI_SNAPSHOT;VDI_MIRROR"]
        # A disk staying on its SR is not checked: XenMotion over storage motion still works.
        a2 = host_ref(a, "a2")
        await x("VM.assert_can_migrate", vm, {"host": a2}, True, {iso_vdi: iso}, {}, {})


def test_srs_of_one_type_agree_on_mirror() -> None:
    with DEFAULT_LAB.open("rb") as fh:
        doc = tomllib.load(fh)
    entry(pool_doc(doc, "Pool A")["srs"], "A local a1")["mirror"] = False
    with pytest.raises(LabError, match="mirror"):
        parse_lab(doc)


def test_default_lab_keeps_the_switches_off() -> None:
    lab = load_lab()
    assert lab.timing.pool_heartbeat_s == 0
    for pool in lab.pools:
        assert {(h.platform_version, h.api_version_minor) for h in pool.hosts} == {("3.4.0", 21)}
        assert all(s.mirror for s in pool.srs)
        assert all(vm.pv_drivers is None for vm in pool.vms)


# -- 4. implemented paths, now under test -------------------------------------------------------


async def test_immobile_vm(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    vm, a2 = vm_ref(pool, "web-01"), host_ref(pool, "a2")
    vdi_map = own_sr_map(sim, vm)
    async with Xapi(master(sim, "Pool A")) as x:
        for key, value in (("nomigrate", "true"), ("nested-virt", "1")):
            await x("VM.add_to_platform", vm, key, value)
            assert await x.fails("VM.pool_migrate", vm, a2, {}) == ["VM_IS_IMMOBILE", vm]
            for call in ("VM.assert_can_migrate", "VM.migrate_send"):
                error = await x.fails(call, vm, {"host": a2}, True, vdi_map, {}, {})
                assert error == ["VM_IS_IMMOBILE", vm]
            await x("VM.remove_from_platform", vm, key)
        await x("VM.add_to_platform", vm, "nomigrate", "false")
        await x("VM.assert_can_migrate", vm, {"host": a2}, True, vdi_map, {}, {})


async def test_passthrough_devices_pin_a_running_vm(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    db = pool.db
    vm, a2 = vm_ref(pool, "web-01"), host_ref(pool, "a2")
    vdi_map = own_sr_map(sim, vm)
    # Passthrough state XAPI only sets when a domain starts: arranged in the database.
    pci = db.create("PCI", class_name="Display controller", pci_id="0000:3b:00.0")
    vgpu = db.create("VGPU", VM=vm, device="0")
    vusb = db.create("VUSB", VM=vm)
    db.update("VM", vm, attached_PCIs=[pci], VGPUs=[vgpu], VUSBs=[vusb])
    async with Xapi(master(sim, "Pool A")) as x:
        # In XAPI's order: PCI, then vGPU, then VUSB.
        for field, code in (
            ("attached_PCIs", "VM_HAS_PCI_ATTACHED"),
            ("VGPUs", "VM_HAS_VGPU"),
            ("VUSBs", "VM_HAS_VUSBS"),
        ):
            assert await x.fails("VM.pool_migrate", vm, a2, {}) == [code, vm]
            for call in ("VM.assert_can_migrate", "VM.migrate_send"):
                assert await x.fails(call, vm, {"host": a2}, True, vdi_map, {}, {}) == [code, vm]
            db.update("VM", vm, **{field: []})
        task = await x("Async.VM.pool_migrate", vm, a2, {})
        assert (await x.wait(task))["status"] == "success"


async def test_disk_checks_apply_to_disks_that_move(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    vm = vm_ref(pool, "app-01")  # on a2, its disk on "A local a2"
    (vdi,) = disks_of(pool, vm)
    a2, local_a2 = host_ref(pool, "a2"), sr_ref(pool, "A local a2")
    a3, shared = host_ref(pool, "a3"), sr_ref(pool, "A shared NFS")
    async with Xapi(master(sim, "Pool A")) as x:
        await x("VDI.add_to_sm_config", vdi, "key_hash", "5f2c0e")
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            error = await x.fails(call, vm, {"host": a3}, True, {vdi: shared}, {}, {})
            assert error == ["VDI_IS_ENCRYPTED", vdi]
        # Staying on its SR, the encrypted disk is no obstacle.
        await x("VM.assert_can_migrate", vm, {"host": a2}, True, {vdi: local_a2}, {}, {})
        await x("VDI.remove_from_sm_config", vdi, "key_hash")
        await x("VDI.set_on_boot", vdi, "reset")
        for call in ("VM.assert_can_migrate", "VM.migrate_send"):
            error = await x.fails(call, vm, {"host": a3}, True, {vdi: shared}, {}, {})
            assert error == ["VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", vdi]
        await x("VDI.set_on_boot", vdi, "persist")
        task = await x("Async.VM.migrate_send", vm, {"host": a3}, True, {vdi: shared}, {}, {})
        assert (await x.wait(task))["status"] == "success"


async def test_cross_pool_copy_keeps_the_source(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    vm = vm_ref(a, "halted-01")
    (vdi,) = disks_of(a, vm)
    vdi_map = {vdi: sr_ref(b, "B shared iSCSI")}
    vif_map = {v: net_ref(b, "B management") for v in vifs_of(a, vm)}
    dest = await receive(sim, "Pool B", "b1", "B management")
    async with Xapi(master(sim, "Pool A")) as xa, Xapi(master(sim, "Pool B")) as xb:
        before = await xa("VM.get_record", vm)
        task = await xa(
            "Async.VM.migrate_send", vm, dest, False, vdi_map, vif_map, {"copy": "true"}
        )
        rec = await xa.wait(task)
        assert rec["status"] == "success", rec
        copy = await xb("VM.get_record", decode_result(rec["result"]))
        # A new VM (new uuid) on a new disk in Pool B ...
        assert copy["name_label"] == "halted-01" and copy["power_state"] == "Halted"
        assert copy["uuid"] != before["uuid"] and copy["current_operations"] == {}
        (new_vbd,) = [v for v in copy["VBDs"] if await xb("VBD.get_type", v) == "Disk"]
        new_vdi = await xb("VBD.get_VDI", new_vbd)
        assert await xb("VDI.get_SR", new_vdi) == vdi_map[vdi]
        # ... while the source stays as it was, disks included.
        after = await xa("VM.get_record", vm)
        assert after["uuid"] == before["uuid"] and after["VBDs"] == before["VBDs"]
        assert after["current_operations"] == {} and "migrate_send" in after["allowed_operations"]
        assert disks_of(a, vm) == [vdi]
        assert (await xa("VDI.get_record", vdi))["SR"] == sr_ref(a, "A shared NFS")


async def test_cd_is_ejected_when_its_sr_is_not_reachable(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    db = pool.db
    vm = vm_ref(pool, "cd-vm")  # on a1, an ISO from "A ISO library" in its drive
    iso_sr = sr_ref(pool, "A ISO library")
    (cd,) = [v for v in db.get("VM", vm)["VBDs"] if db.get("VBD", v)["type"] == "CD"]
    iso = db.get("VBD", cd)["VDI"]
    vdi_map = own_sr_map(sim, vm)
    async with Xapi(master(sim, "Pool A")) as x:
        # The ISO SR is reachable from a3: the CD moves along.
        a3 = host_ref(pool, "a3")
        task = await x("Async.VM.migrate_send", vm, {"host": a3}, True, vdi_map, {}, {})
        assert (await x.wait(task))["status"] == "success"
        assert await x("VBD.get_VDI", cd) == iso and not await x("VBD.get_empty", cd)
        # Unplugged from a2: XenMotion needs the SR, storage motion ejects the CD.
        a2 = host_ref(pool, "a2")
        (pbd,) = [p for p in db.get("SR", iso_sr)["PBDs"] if db.get("PBD", p)["host"] == a2]
        db.update("PBD", pbd, currently_attached=False)
        assert await x.fails("VM.pool_migrate", vm, a2, {}) == ["VM_REQUIRES_SR", vm, iso_sr]
        await x("VM.assert_can_migrate", vm, {"host": a2}, True, vdi_map, {}, {})
        task = await x("Async.VM.migrate_send", vm, {"host": a2}, True, vdi_map, {}, {})
        assert (await x.wait(task))["status"] == "success"
        assert await x("VM.get_resident_on", vm) == a2
        assert await x("VBD.get_empty", cd) and await x("VBD.get_VDI", cd) == NULL
        assert cd not in await x("VDI.get_VBDs", iso)
        assert await x("VDI.get_SR", iso) == iso_sr  # the ISO itself is untouched


# -- 5. heartbeat, 6. message.cls ---------------------------------------------------------------


async def test_pool_heartbeat_is_opt_in() -> None:
    def edit(doc: Doc) -> None:
        doc["timing"]["pool_heartbeat_s"] = 5.0  # 10 ms at SIM_TIME_SCALE

    async with lab_sim(edit) as sim, Xapi(master(sim, "Pool A")) as x:
        pool = sim.pool("Pool A")
        token = (await x("event_from", ["pool"], "", 0.0))["token"]
        batch = await x("event_from", ["pool"], token, 5.0)
        assert [(e["class"], e["operation"], e["ref"]) for e in batch["events"]] == [
            ("pool", "mod", pool.ref)
        ]
        assert batch["events"][0]["snapshot"]["uuid"] == pool.uuid


async def test_message_records_carry_their_own_cls(sim: Simulator) -> None:
    db = Database()
    ref = db.create("message", name="HA_POOL_OVERCOMMITTED", cls="Pool", obj_uuid="u")
    assert db.get("message", ref)["cls"] == "Pool"
    db.update("message", ref, cls="Host")
    assert db.get("message", ref)["cls"] == "Host"
    pool = sim.pool("Pool A")
    vm, a2 = vm_ref(pool, "web-01"), host_ref(pool, "a2")
    async with Xapi(master(sim, "Pool A")) as x:
        before = set(await x("message.get_all"))
        task = await x("Async.VM.pool_migrate", vm, a2, {})
        assert (await x.wait(task))["status"] == "success"
        (new,) = set(await x("message.get_all")) - before
        message = await x("message.get_record", new)
        assert message["name"] == "VM_MIGRATED" and message["cls"] == "VM"
