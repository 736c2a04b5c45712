"""The methods of xo-web's host, pool and VM pages that ask XAPI (host clock, RAID health,
missing patches, secure boot readiness, stats), against the simulated lab: xo-server's
answer shapes, its permissions ("view" on the object: admins only without ACLs) and its
errors for unknown objects and bad params."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from server.migrations.service import MigrationSettings
from tests.migrations.conftest import Lab, lab_on
from tests.server.xo_client import XoClient
from xen.sim import Simulator
from xen.sim.secureboot import efi_variables_blob

pytestmark = pytest.mark.timeout(60)

UPDATE = {
    "name": "xapi-core",
    "version": "25.6.1",
    "release": "1.xcpng8.3",
    "description": "xapi toolstack",
    "changelog": None,
    "url": "https://xcp-ng.org",
    "size": 3145728,
    "license": "LGPL",
}
HOST_STATS = {"load", "memoryFree", "memory", "cpus", "pifs"}
VM_STATS = {"memoryFree", "memory", "cpus", "vifs", "xvds", "iops"}


def series(stats: dict[str, Any]) -> list[list[Any]]:
    """Every list of values in a `stats` tree."""
    out: list[list[Any]] = []
    for value in stats.values():
        out += [value] if isinstance(value, list) else series(value)
    return out


def sim_ref(sim: Simulator, pool: str, table: str, name: str) -> str:
    db = sim.pool(pool).db
    return next(r for r, rec in db.table(table).items() if rec["name_label"] == name)


async def user_client(lab: Lab) -> XoClient:
    await lab.server.state.auth.add_user("op@x.net", "pw", "user")
    client = await XoClient.connect(lab.server.ws_url)
    lab.clients.append(client)
    await client.sign_in("op@x.net", "pw")
    return client


async def test_host_and_pool_checks_answer_as_xo_server(sim: Simulator, tmp_path: Path) -> None:
    pool_a = sim.pool("Pool A")
    a2_ref = sim_ref(sim, "Pool A", "host", "a2")
    pool_a.updates[a2_ref] = [{k: v for k, v in UPDATE.items() if v is not None}]
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        call = lab.client.call
        a1, a2 = await lab.id_of("host", "a1"), await lab.id_of("host", "a2")
        pool = await lab.id_of("pool", "Pool A")

        pool_a.reset_stats()
        assert await call("host.isHostServerTimeConsistent", {"host": a1}) is True
        assert await call("host.isHostServerTimeConsistent", {"host": a1}) is True
        # The shift is measured once a minute per host, as xo-server debounces it.
        assert pool_a.stats().get("host.get_servertime") == 1

        assert await call("host.getMdadmHealth", {"id": a1}) == {}  # no software RAID
        assert await call("host.getBiosInfo", {"id": a1}) is True  # not a 2CRSI server
        # Plugins the lab's hosts lack: null, as xo-server answers then.
        assert await call("host.getSmartctlHealth", {"id": a1}) is None
        assert await call("host.isHyperThreadingEnabled", {"id": a1}) is None

        # XCP-ng's updater plugin: its package list as is, reused for a minute.
        assert await call("pool.listMissingPatches", {"host": a1}) == []
        assert await call("pool.listMissingPatches", {"host": a2}) == [UPDATE]
        pool_a.updates[a2_ref] = []
        assert await call("pool.listMissingPatches", {"host": a2}) == [UPDATE]

        # XAPI without pool.get_guest_secureboot_readiness: its error, which xo-web ignores.
        error = await lab.error_of("pool.getGuestSecureBootReadiness", {"id": pool})
        assert error["code"] == -32000 and error["data"]["code"] == "MESSAGE_METHOD_UNKNOWN"

        info = await call("system.getMethodsInfo")
        assert info["pool.listMissingPatches"] == {
            "description": "return an array of missing new patches in the host",
            "params": {"host": {"type": "string"}},
        }
        assert info["host.isHostServerTimeConsistent"] == {"params": {"host": {"type": "string"}}}
        assert "permission" not in info["host.getMdadmHealth"]


async def test_vm_secure_boot_readiness_follows_xapi_and_force_refresh(
    sim: Simulator, tmp_path: Path
) -> None:
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        vm = await lab.id_of("VM", "web-01")
        call = lab.client.call
        assert await call("vm.getSecurebootReadiness", {"id": vm}) == "not_supported"  # BIOS
        db = sim.pool("Pool A").db
        db.update(
            "VM",
            sim_ref(sim, "Pool A", "VM", "web-01"),
            HVM_boot_params={"firmware": "uefi"},
            platform={"secureboot": "true"},
            NVRAM={"EFI-variables": efi_variables_blob(["PK", "KEK", "db", "dbx"])},
        )
        # Reused for 30 s, as xo-server caches it, unless forceRefresh.
        assert await call("vm.getSecurebootReadiness", {"id": vm}) == "not_supported"
        assert await call("vm.getSecurebootReadiness", {"id": vm, "forceRefresh": True}) == (
            "ready"
        )
        assert await call("vm.getHaValues") == ["best-effort", "restart", ""]


async def test_stats_have_xo_servers_shape_for_every_granularity(
    sim: Simulator, tmp_path: Path
) -> None:
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        call = lab.client.call
        a1 = await lab.id_of("host", "a1")
        vm_id = await lab.id_of("VM", "web-01")
        vm = await lab.get(vm_id)
        assert vm["$container"] == a1
        pool_a = sim.pool("Pool A")
        pool_a.reset_stats()

        host_stats = await call("host.stats", {"host": a1})
        vm_stats = await call("vm.stats", {"id": vm_id})
        # One download of the host's RRDs serves the host and its VMs for a step.
        assert pool_a.stats().get("GET /rrd_updates") == 1
        assert list(host_stats) == ["endTimestamp", "interval", "stats"]
        assert host_stats["interval"] == 5 and host_stats["endTimestamp"] % 5 == 0
        assert abs(host_stats["endTimestamp"] - time.time()) < 15
        assert set(host_stats["stats"]) == HOST_STATS
        host = await lab.get(a1)
        assert set(host_stats["stats"]["cpus"]) == {
            str(n) for n in range(int(host["CPUs"]["cpu_count"]))
        }
        assert set(host_stats["stats"]["pifs"]) == {"rx", "tx"}
        assert set(host_stats["stats"]["pifs"]["rx"]) == {"0", "1"}  # eth0, eth1
        # rrdd prints 5 significant digits: KiB * 1024 is the host's memory to 1e-4.
        assert host_stats["stats"]["memory"][-1] == pytest.approx(host["memory"]["size"], 1e-4)

        assert set(vm_stats["stats"]) == VM_STATS
        assert set(vm_stats["stats"]["cpus"]) == {str(n) for n in range(vm["CPUs"]["number"])}
        assert set(vm_stats["stats"]["xvds"]["r"]) == {"a"}
        assert set(vm_stats["stats"]["vifs"]["rx"]) == {"0"}
        assert vm_stats["stats"]["memory"][-1] == pytest.approx(vm["memory"]["size"], 1e-4)
        for stats in (host_stats, vm_stats):
            lengths = {len(values) for values in series(stats["stats"])}
            assert len(lengths) == 1 and 100 <= lengths.pop() <= 120
        # CPUs in percent, free memory in bytes (rrdd gives a fraction and KiB).
        assert all(0 <= v <= 100 for v in vm_stats["stats"]["cpus"]["0"])
        assert 0 < vm_stats["stats"]["memoryFree"][-1] < vm["memory"]["size"]

        for granularity, step, rows in (("minutes", 60, 120), ("hours", 3600, 168)):
            answer = await call("vm.stats", {"id": vm_id, "granularity": granularity})
            assert answer["interval"] == step and answer["endTimestamp"] % step == 0
            assert {len(v) for v in series(answer["stats"])} <= set(range(rows - 2, rows + 1))
        days = await call("host.stats", {"host": a1, "granularity": "days"})
        assert days["interval"] == 86400 and set(days["stats"]) == HOST_STATS

        error = await lab.error_of("vm.stats", {"id": vm_id, "granularity": "weeks"})
        message = "Unknown granularity: 'weeks'. Use 'seconds', 'minutes', 'hours', or 'days'."
        assert error == {
            "code": -32000,
            "data": {"message": message, "name": "FaultyGranularity"},
            "message": message,
        }
        halted = await lab.id_of("VM", "halted-01")
        error = await lab.error_of("vm.stats", {"id": halted})
        assert error["message"] == f"VM {halted} is halted or host could not be found."


async def test_bad_input_and_permissions(sim: Simulator, tmp_path: Path) -> None:
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        a1 = await lab.id_of("host", "a1")
        vm = await lab.id_of("VM", "web-01")
        pool = await lab.id_of("pool", "Pool A")
        op = await user_client(lab)
        anonymous = await XoClient.connect(lab.server.ws_url)
        lab.clients.append(anonymous)
        # (method, params, object id, permission xo-server requires on it)
        on_objects = [
            ("host.isHostServerTimeConsistent", {"host": a1}, a1, "view"),
            ("host.getMdadmHealth", {"id": a1}, a1, "view"),
            ("host.getBiosInfo", {"id": a1}, a1, "administrate"),
            ("host.getSmartctlHealth", {"id": a1}, a1, "view"),
            ("host.isHyperThreadingEnabled", {"id": a1}, a1, "administrate"),
            ("host.stats", {"host": a1}, a1, "view"),
            ("pool.listMissingPatches", {"host": a1}, a1, "view"),
            ("vm.stats", {"id": vm}, vm, "view"),
            ("vm.getSecurebootReadiness", {"id": vm}, vm, "view"),
        ]
        for method, params, obj, permission in on_objects:
            assert (await op.request(method, params))["error"] == {
                "message": "not enough permissions",
                "code": 2,
                "data": {"permission": permission, "object": {"id": obj}},
            }, method
            assert (await anonymous.request(method, params))["error"]["code"] == 2, method
            key = next(iter(params))
            missing = await lab.error_of(method, {**params, key: "nope"})
            types = ["VM", "VM-snapshot"] if method == "vm.stats" else None
            obj_type = "host" if method.startswith(("host.", "pool.")) else "VM"
            assert missing == {
                "message": f"no such {','.join(types) if types else obj_type} nope",
                "code": 1,
                "data": {"id": "nope", "type": types or obj_type},
            }, method
            wrong = await lab.error_of(method, {**params, key: 42})
            assert wrong["code"] == 10 and wrong["data"]["errors"][0]["instancePath"] == f"/{key}"
            extra = await lab.error_of(method, {**params, "other": 1})
            assert extra["code"] == 10, method
        # A host is not a VM, a pool id is not a host.
        assert (await lab.error_of("vm.stats", {"id": a1}))["code"] == 1
        assert (await lab.error_of("host.stats", {"host": pool}))["code"] == 1
        # No permission on the pool in xo-server: a user reaches XAPI, whose error it may
        # not read.
        answer = await op.request("pool.getGuestSecureBootReadiness", {"id": pool})
        assert answer["error"] == {"code": -32000, "message": "unknown error from the peer"}
        # Methods without objects: any signed-in user.
        assert (await op.request("vm.getHaValues"))["result"] == ["best-effort", "restart", ""]
        assert (await anonymous.request("vm.getHaValues"))["error"]["code"] == 2
        # Nothing changed on the way.
        assert (await lab.get(vm))["$container"] == a1
