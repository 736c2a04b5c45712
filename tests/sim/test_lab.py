"""The lab file, the shipped default lab, the manifest and the CLI entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.sim.helpers import cli_sim, master_url, xenapi
from xen.sim import Simulator, generate_lab, load_lab
from xen.sim.lab import GIB, LabError, parse_lab


def test_default_lab_shape() -> None:
    lab = load_lab()
    assert [p.name for p in lab.pools] == ["Pool A", "Pool B"]
    a, b = lab.pools
    assert [(h.name, h.address, h.master) for h in a.hosts] == [
        ("a1", "127.0.1.1", True), ("a2", "127.0.1.2", False), ("a3", "127.0.1.3", False)]  # fmt: skip
    assert a.default_sr == "A shared NFS" and b.default_sr == "B shared iSCSI"
    assert 18 <= len(a.vms) + len(b.vms) <= 24
    assert (a.username, a.password) == ("root", "password")


def test_manifest_shape(sim: Simulator, manifest: dict[str, Any]) -> None:
    assert manifest["port"] == sim.port > 0
    pool = manifest["pools"][0]
    assert pool["master"] == f"http://127.0.1.1:{sim.port}/"
    assert set(pool) == {"name", "uuid", "master", "username", "password", "hosts"}
    assert set(pool["hosts"][0]) == {"name", "uuid", "address"}
    assert json.loads(json.dumps(manifest)) == manifest


async def test_default_lab_objects(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> dict[str, Any]:
        return {c: getattr(x, c).get_all_records() for c in
                ("VM", "VDI", "VBD", "SR", "PBD", "PIF", "network", "host", "pool", "VM_guest_metrics")}  # fmt: skip

    r = await xenapi(master_url(manifest), work)
    vms = {v["name_label"]: v for v in r["VM"].values()}
    srs = {ref: s for ref, s in r["SR"].items()}
    hosts = {ref: h["name_label"] for ref, h in r["host"].items()}
    # control domains, one per host
    assert sum(v["is_control_domain"] for v in vms.values()) == 3
    db = vms["db-01"]
    assert db["memory_static_max"] == str(16 * GIB) and hosts[db["resident_on"]] == "a1"
    disk_srs = sorted(srs[r["VDI"][r["VBD"][v]["VDI"]]["SR"]]["name_label"] for v in db["VBDs"])
    assert disk_srs == ["A local a1", "A shared NFS"]
    app = vms["app-01"]
    (vbd,) = app["VBDs"]
    vdi = r["VDI"][r["VBD"][vbd]["VDI"]]
    assert (vdi["virtual_size"], vdi["physical_utilisation"]) == (str(30 * GIB), str(12 * GIB))
    assert len(vms["app-02"]["snapshots"]) == 2
    snap = next(v for v in vms.values() if v["is_a_snapshot"])
    snap_vdi = r["VDI"][r["VBD"][snap["VBDs"][0]]["VDI"]]
    assert snap_vdi["is_a_snapshot"] and snap_vdi["snapshot_of"] in r["VDI"]
    cd = [r["VBD"][v] for v in vms["cd-vm"]["VBDs"] if r["VBD"][v]["type"] == "CD"]
    assert len(cd) == 1 and cd[0]["mode"] == "RO"
    assert set(vms["locked-vm"]["blocked_operations"]) == {"migrate_send", "pool_migrate"}
    assert vms["Debian 12 template"]["is_a_template"]
    assert (
        vms["halted-01"]["power_state"] == "Halted"
        and "migrate_send" in vms["halted-01"]["allowed_operations"]
    )
    assert {"pool_migrate", "migrate_send"} <= set(vms["web-01"]["allowed_operations"])
    assert any(v["cbt_enabled"] for v in r["VDI"].values())
    assert vms["web-01"]["guest_metrics"] in r["VM_guest_metrics"]
    assert vms["web-01"]["last_boot_CPU_flags"]["vendor"] == "GenuineIntel"
    migration_ips = sorted(p["IP"] for p in r["PIF"].values() if not p["management"])
    assert migration_ips == ["127.0.11.1", "127.0.11.2", "127.0.11.3"]
    (pool,) = r["pool"].values()
    shared_ref = next(ref for ref, s in srs.items() if s["name_label"] == "A shared NFS")
    assert pool["default_SR"] == shared_ref
    shared = srs[shared_ref]
    assert shared["shared"] and len(shared["PBDs"]) == 3


async def test_pool_b_cpu_and_default_sr(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return x.host.get_all_records(), x.pool.get_all_records()

    hosts, pools = await xenapi(master_url(manifest, "Pool B"), work)
    by_name = {h["name_label"]: h for h in hosts.values()}
    full = int(by_name["b1"]["cpu_info"]["features"].replace("-", ""), 16)
    old = int(by_name["b2"]["cpu_info"]["features"].replace("-", ""), 16)
    assert old & full == old and old != full
    (pool,) = pools.values()
    assert pool["default_SR"] != "OpaqueRef:NULL"


def test_pool_by_address(sim: Simulator) -> None:
    assert sim.pool_by_address("127.0.1.2") is sim.pool("Pool A")
    assert sim.pool_by_address("127.0.11.3") is sim.pool("Pool A")  # migration network IP
    assert sim.pool_by_address("127.0.12.1") is sim.pool("Pool B")
    assert sim.pool_by_address("10.9.9.9") is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"pools": [{"name": "P", "hosts": [], "bogus": 1}]}, "unknown keys"),
        ({"pools": [{"name": "P", "hosts": []}]}, "no hosts"),
        ({"pools": [{"name": "P", "hosts": [{"name": "h", "address": "127.0.9.1"}],
                     "networks": [{"name": "n", "management": True}],
                     "vms": [{"name": "v", "disks": [{"sr": "nope"}]}]}]}, "unknown SR"),
        ({"pools": [{"name": "P", "hosts": [{"name": "h", "address": "127.0.9.1"}],
                     "networks": [{"name": "n", "management": True}],
                     "vms": [{"name": "v", "secure_boot": True}]}]}, "needs firmware"),
        ({"pools": [{"name": "P", "hosts": [{"name": "h", "address": "127.0.9.1",
                                             "updates": [{"name": "x"}]}],
                     "networks": [{"name": "n", "management": True}]}]}, "each update needs"),
    ],
)  # fmt: skip
def test_lab_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError, match=message):
        parse_lab(doc)


async def test_generated_lab_loads_and_syncs() -> None:
    lab = generate_lab(1000, 2)
    sim = Simulator(lab, time_scale=0.01)
    await sim.start()
    try:
        batch = await xenapi(
            master_url(sim.manifest(), "Gen 1"), lambda x: x.event_from(["vm"], "", 1.0)
        )
        assert batch["valid_ref_counts"]["vm"] == 500 + 4  # + control domains
        assert len(batch["events"]) == 504
    finally:
        await sim.stop()


async def test_cli_serve_writes_manifest(tmp_path: Path) -> None:
    async with cli_sim(tmp_path / "manifest.json") as manifest:
        assert manifest["pools"][0]["master"].startswith("http://127.0.1.1:")
