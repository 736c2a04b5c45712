"""Initial sync and live changes: the cache mirrors the simulator in xo-server's shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.xen.helpers import (
    converged,
    eventually,
    mismatches,
    pool_config,
    pool_objects,
)
from xen.cache import PoolCache
from xen.pool import MIGRATION_CLASSES
from xen.pools import PoolManager
from xen.store import ObjectStore

# XAPI class -> the xo-server types its objects are published as.
PUBLISHED = {
    "pool": {"pool"},
    "host": {"host"},
    "VM": {"VM", "VM-controller", "VM-snapshot", "VM-template"},
    "SR": {"SR"},
    "VDI": {"VDI", "VDI-snapshot", "VDI-unmanaged"},
    "VBD": {"VBD"},
    "VIF": {"VIF"},
    "PBD": {"PBD"},
    "PIF": {"PIF"},
    "network": {"network"},
    "SM": {"SM"},
}

pytestmark = pytest.mark.timeout(60)


async def connect(sim, pools: PoolManager, name: str):
    cfg = pool_config(sim.manifest(), name)
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    assert conn is not None
    await conn.wait_ready(15)
    return cfg, conn


async def test_initial_sync_equals_simulator(sim, pools: PoolManager, store: ObjectStore) -> None:
    manifest = sim.manifest()
    configs = [pool_config(manifest, p["name"]) for p in manifest["pools"]]
    for cfg in configs:
        await pools.add(cfg)  # returns at once; both pools connect concurrently
    for cfg in configs:
        await pools.connection(cfg.id).wait_ready(15)

    for pool in manifest["pools"]:
        simpool = sim.pool(pool["name"])
        objects = pool_objects(store, simpool.uuid)
        # Every object of the published classes, none of the others (metrics, consoles...).
        for cls, xo_types in PUBLISHED.items():
            refs = {ref for ref, _ in simpool.db.iter_records(cls)}
            got = {o["_xapiRef"] for o in objects.values() if o["type"] in xo_types}
            assert got == refs, cls
        assert {o["type"] for o in objects.values()} <= {t for ts in PUBLISHED.values() for t in ts}

    statuses = {s["id"]: s for s in pools.statuses()}
    for cfg, pool in zip(configs, manifest["pools"], strict=True):
        status = statuses[cfg.id]
        assert status["status"] == "connected"
        assert status["poolId"] == pool["uuid"]
        assert status["host"] == cfg.url and status["username"] == cfg.username
        assert "error" not in status
        assert pools.connection_for_pool(pool["uuid"]) is pools.connection(cfg.id)


async def test_xo_shape_of_key_objects(sim, pools: PoolManager, store: ObjectStore) -> None:
    _, conn = await connect(sim, pools, "Pool A")
    db = sim.pool("Pool A").db
    pool_uuid = conn.pool_id
    vm_ref = db.find_one("VM", name_label="web-01")
    vm = store.by_ref(pool_uuid, vm_ref)
    assert vm is not None and vm["type"] == "VM"
    assert store.id_of_ref(pool_uuid, vm_ref) == vm["id"] == db.get("VM", vm_ref)["uuid"]
    host_uuid = db.get("host", db.get("VM", vm_ref)["resident_on"])["uuid"]
    assert vm["$container"] == host_uuid and store.get(host_uuid)["type"] == "host"
    assert isinstance(vm["memory"]["static"][1], int) and vm["memory"]["static"][1] >= 2**31
    assert len(vm["$VBDs"]) >= 1 and all(store.get(i)["type"] == "VBD" for i in vm["$VBDs"])
    assert vm["VIFs"] and all(store.get(i)["type"] == "VIF" for i in vm["VIFs"])
    vbd = store.get(vm["$VBDs"][0])
    assert vbd["VM"] == vm["id"]
    if vbd.get("VDI") is not None:
        vdi = store.get(vbd["VDI"])
        assert vdi["type"] == "VDI" and store.get(vdi["$SR"])["type"] == "SR"
    halted_ref = db.find_one("VM", name_label="halted-01")  # on shared storage
    halted = store.by_ref(pool_uuid, halted_ref)
    assert halted["$container"] == pool_uuid
    assert store.by_type("VM-controller"), "dom0 of each host is a VM-controller"
    assert store.by_type("VM-snapshot"), "the lab has snapshots"
    pool = store.get(pool_uuid)
    assert pool["type"] == "pool" and store.get(pool["master"])["type"] == "host"


async def test_change_shows_up_promptly(sim, pools: PoolManager, store: ObjectStore) -> None:
    _, conn = await connect(sim, pools, "Pool A")
    db = sim.pool("Pool A").db
    pool_uuid = conn.pool_id
    vm_ref = db.find_one("VM", name_label="web-01")
    vm_id = db.get("VM", vm_ref)["uuid"]

    db.update("VM", vm_ref, name_label="web-01 renamed")
    await eventually(lambda: store.get(vm_id)["name_label"] == "web-01 renamed", 2, "rename")

    # The VM "moves" to another host: its $container follows.
    current = db.get("VM", vm_ref)["resident_on"]
    other = next(h for h in db.all_refs("host") if h != current)
    db.update("VM", vm_ref, resident_on=other)
    other_id = db.get("host", other)["uuid"]
    await eventually(lambda: store.get(vm_id)["$container"] == other_id, 2, "$container")

    # Task progress, then completion, then removal.
    task_ref = db.create(
        "task",
        name_label="Async.VM.pool_migrate",
        status="pending",
        created=datetime.now(UTC).replace(microsecond=0),
    )
    task_id = db.get("task", task_ref)["uuid"]
    await eventually(lambda: store.get(task_id), 2, "task enters")
    task = store.get(task_id)
    assert task["type"] == "task" and task["status"] == "pending" and task["finished"] is None
    assert isinstance(task["created"], int) and task["created"] > 1_600_000_000
    db.update("task", task_ref, progress=0.42)
    await eventually(lambda: store.get(task_id)["progress"] == 0.42, 2, "progress")
    db.delete("task", task_ref)
    await eventually(lambda: task_id not in store, 2, "task exits")
    assert store.by_ref(pool_uuid, task_ref) is None

    # Whole objects come and go.
    net_ref = db.create("network", name_label="new net", bridge="xenbr9")
    net_id = db.get("network", net_ref)["uuid"]
    await eventually(lambda: net_id in store, 2, "network enters")
    db.delete("network", net_ref)
    await eventually(lambda: net_id not in store, 2, "network exits")
    await converged(sim, store, "Pool A")


async def test_disable_withdraws_objects_enable_restores(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    cfg, conn = await connect(sim, pools, "Pool B")
    pool_uuid = conn.pool_id
    count = len(pool_objects(store, pool_uuid))
    exits: set[str] = set()
    store.subscribe(lambda changes: exits.update(changes.exit))

    await pools.disable(cfg.id)
    assert pool_objects(store, pool_uuid) == {}
    status = pools.statuses()[0]
    assert status["status"] == "disconnected" and status["enabled"] is False
    store.flush()
    assert len(exits) == count

    await pools.enable(cfg.id)
    await pools.connection(cfg.id).wait_ready(15)
    assert len(pool_objects(store, pool_uuid)) == count

    await pools.remove(cfg.id)
    assert pool_objects(store, pool_uuid) == {}
    assert pools.statuses() == []


async def test_a_halted_vm_on_a_local_sr_is_contained_by_that_host(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    """xo-server-api.md 4.2: a halted VM's `$container` is the pool, or the host holding its
    local SR; it follows the VM's disks as they move."""
    _, conn_a = await connect(sim, pools, "Pool A")
    _, conn_b = await connect(sim, pools, "Pool B")
    a, b = sim.pool("Pool A").db, sim.pool("Pool B").db

    def host_uuid(db, name: str) -> str:
        return db.get("host", db.find_one("host", name_label=name))["uuid"]

    on_shared = store.get(a.get("VM", a.find_one("VM", name_label="halted-01"))["uuid"])
    assert on_shared["power_state"] == "Halted" and on_shared["$container"] == conn_a.pool_id
    vm_ref = a.find_one("VM", name_label="halted-02")  # its disk is on "A local a2"
    vm_id = a.get("VM", vm_ref)["uuid"]
    assert store.get(vm_id)["$container"] == host_uuid(a, "a2")

    # Moved (storage motion) to Pool B, its disk onto b2's local SR: there it is.
    (vbd,) = a.get("VM", vm_ref)["VBDs"]
    (vif,) = a.get("VM", vm_ref)["VIFs"]
    dest = await conn_b.call(
        "host.migrate_receive",
        b.find_one("host", name_label="b2"),
        b.find_one("network", name_label="B management"),
        {},
    )
    vdi_map = {a.get("VBD", vbd)["VDI"]: b.find_one("SR", name_label="B local b2")}
    vif_map = {vif: b.find_one("network", name_label="B management")}
    await conn_a.call_async("VM.migrate_send", vm_ref, dest, False, vdi_map, vif_map, {})
    b2 = host_uuid(b, "b2")
    await eventually(
        lambda: (
            (store.get(vm_id) or {}).get("$container") == b2
            and store.get(vm_id)["$pool"] == conn_b.pool_id
        ),
        5,
        "the VM contained by b2",
    )

    await converged(sim, store, "Pool A")
    await converged(sim, store, "Pool B")


async def test_metrics_give_a_vms_addresses_tools_and_times(
    sim, pools: PoolManager, store: ObjectStore
) -> None:
    """A VM's guest metrics and metrics are folded into it as xo-server does (addresses
    normalized to `N/ipv4/M`, tools and PV drivers, memory, start time), never published on
    their own, and followed when only they change."""
    await connect(sim, pools, "Pool A")
    db = sim.pool("Pool A").db
    vm_ref = db.find_one("VM", name_label="web-01")
    vm_id = db.get("VM", vm_ref)["uuid"]
    gm_ref = db.get("VM", vm_ref)["guest_metrics"]
    metrics = db.get("VM_metrics", db.get("VM", vm_ref)["metrics"])
    vm = store.get(vm_id)
    assert vm["addresses"] == {"0/ipv4/0": "10.0.0.1"} and vm["mainIpAddress"] == "10.0.0.1"
    assert vm["pvDriversDetected"] is True and vm["pvDriversUpToDate"] is True
    assert vm["pvDriversVersion"] == "8.3.0-1"
    assert vm["xenTools"] == {"major": 8, "minor": 3, "version": 8.3}
    assert vm["os_version"]["distro"] == "debian" and vm["managementAgentDetected"] is True
    assert vm["startTime"] == int(metrics["start_time"].timestamp())
    assert vm["memory"]["size"] == int(metrics["memory_actual"])
    for cls in ("VM_guest_metrics", "VM_metrics"):
        assert not store.by_type(cls)  # never objects of their own
    halted = store.get(db.get("VM", db.find_one("VM", name_label="halted-01"))["uuid"])
    assert halted["addresses"] == {} and "mainIpAddress" not in halted
    assert halted["startTime"] is None and halted["os_version"] is None
    assert "xenTools" not in halted and "pvDriversDetected" not in halted

    # The guest's addresses change: only the guest metrics are modified in XAPI.
    networks = {"0/ip": "10.0.0.7", "0/ipv4/0": "10.0.0.7", "0/ipv6/0": "fe80::7"}
    db.update("VM_guest_metrics", gm_ref, networks=networks)
    await eventually(lambda: store.get(vm_id)["mainIpAddress"] == "10.0.0.7", 2, "new IP")
    assert store.get(vm_id)["addresses"] == {"0/ipv4/0": "10.0.0.7", "0/ipv6/0": "fe80::7"}

    # A reboot: new guest metrics, the old ones go.
    new_gm = db.create(
        "VM_guest_metrics",
        networks={"1/ipv6/0": "fe80::8"},
        PV_drivers_detected=True,
        PV_drivers_up_to_date=False,
        PV_drivers_version={"major": "9", "minor": "0", "micro": "1", "build": "7"},
    )
    db.update("VM", vm_ref, guest_metrics=new_gm)
    db.delete("VM_guest_metrics", gm_ref)
    await eventually(lambda: store.get(vm_id)["mainIpAddress"] == "fe80::8", 2, "after reboot")
    vm = store.get(vm_id)
    assert vm["pvDriversUpToDate"] is False and vm["pvDriversVersion"] == "9.0.1-7"
    assert vm["xenTools"]["version"] == 9.0 and vm["os_version"] is None

    # Its metrics change alone: the memory it has now shows.
    db.update("VM_metrics", db.get("VM", vm_ref)["metrics"], memory_actual=3 * 1024**3)
    await eventually(lambda: store.get(vm_id)["memory"]["size"] == 3 * 1024**3, 2, "memory")

    # The agent stops: no guest metrics any more, tools known absent.
    db.update("VM", vm_ref, guest_metrics="OpaqueRef:NULL")
    db.delete("VM_guest_metrics", new_gm)
    await eventually(lambda: store.get(vm_id)["addresses"] == {}, 2, "no addresses")
    assert store.get(vm_id)["xenTools"] is False
    assert "pvDriversDetected" not in store.get(vm_id)
    await converged(sim, store, "Pool A")


@pytest.mark.parametrize("order", ["classes", "reversed"])
async def test_a_snapshot_in_any_class_order_converts_the_same(
    sim, pools: PoolManager, store: ObjectStore, order: str
) -> None:
    """Real XAPI answers token "" table by table, in the order of the classes asked for: a
    VM comes before the VBDs, VDIs, SRs and PBDs its `$container` is derived from. The same
    records (fetched over the wire), applied in that order or the reverse, give the same
    objects as the simulator's own batch."""
    _, conn = await connect(sim, pools, "Pool A")
    classes = list(MIGRATION_CLASSES)
    if order == "reversed":
        classes.reverse()
    events = []
    for cls in classes:
        records = await conn.call(f"{cls}.get_all_records")
        events += [
            {"class": cls.lower(), "operation": "add", "ref": ref, "snapshot": rec}
            for ref, rec in records.items()
        ]
    fresh = ObjectStore()
    cache = PoolCache(fresh, "Pool A", MIGRATION_CLASSES)
    await cache.apply(events, full=True, poll=1)
    db = sim.pool("Pool A").db
    live = pool_objects(store, conn.pool_id)
    assert mismatches(live, pool_objects(fresh, conn.pool_id)) == []
    halted = fresh.get(db.get("VM", db.find_one("VM", name_label="halted-02"))["uuid"])
    a2 = db.get("host", db.find_one("host", name_label="a2"))["uuid"]
    assert halted["$container"] == a2
    web = fresh.get(db.get("VM", db.find_one("VM", name_label="web-01"))["uuid"])
    assert web["mainIpAddress"] == "10.0.0.1"
