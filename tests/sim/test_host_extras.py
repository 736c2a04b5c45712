"""What xo-server reads besides migrations, through the official XenAPI binding: host plugins
(host.call_plugin), secure boot readiness, consoles, PIF metrics, and the host's boot time,
certificates, CPUs, licence and iSCSI IQN."""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.conftest import SIM_TIME_SCALE
from tests.sim.test_migration_support import (
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
from xen.sim.lab import parse_lab
from xen.sim.secureboot import efi_variables_blob

UPDATE = {
    "name": "xapi-core",
    "version": "25.6.1",
    "release": "1.xcpng8.3",
    "description": "xapi toolstack",
    "changelog": {"date": 1764000000, "author": "Vates <sim@example.com>", "description": "fix"},
    "url": "https://xcp-ng.org",
    "size": 3145728,
    "license": "LGPL",
}
# name -> (firmware, secure_boot, efi_vars) -> expected readiness
SECURE_BOOT_VMS = {
    "bios": ("bios", False, [], "not_supported"),
    "uefi": ("uefi", False, [], "disabled"),
    "fresh": ("uefi", True, [], "first_boot"),
    "no-pk": ("uefi", True, ["KEK", "db", "dbx"], "setup_mode"),
    "no-kek": ("uefi", True, ["PK", "db", "dbx"], "certs_incomplete"),
    "no-dbx": ("uefi", True, ["PK", "KEK", "db"], "ready_no_dbx"),
    "ready": ("uefi", True, ["PK", "KEK", "db", "dbx"], "ready"),
}


def small_lab() -> dict[str, Any]:
    return {
        "pools": [
            {
                "name": "P",
                "hosts": [
                    {"name": "h1", "address": "127.0.9.1", "master": True, "updates": [UPDATE]},
                    {"name": "h2", "address": "127.0.9.2"},
                ],
                "networks": [{"name": "mgmt", "management": True}],
                "vms": [
                    {
                        "name": name,
                        "host": "h1",
                        "power_state": "Running",
                        "firmware": fw,
                        "secure_boot": sb,
                        "efi_vars": efi,
                    }
                    for name, (fw, sb, efi, _) in SECURE_BOOT_VMS.items()
                ],
            }
        ]
    }


@pytest.fixture
async def small() -> AsyncIterator[Simulator]:
    sim = Simulator(parse_lab(small_lab()), port=0, time_scale=SIM_TIME_SCALE)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def test_updater_plugin_lists_and_installs_the_labs_updates(small: Simulator) -> None:
    pool = small.pool("P")
    h1, h2 = host_ref(pool, "h1"), host_ref(pool, "h2")
    async with Xapi(master(small, "P")) as x:
        listed = json.loads(await x("host.call_plugin", h1, "updater.py", "check_update", {}))
        assert listed == [UPDATE]
        assert await x("host.call_plugin", h2, "updater.py", "check_update", {}) == "[]"
        reply = await x("host.call_plugin", h1, "updater.py", "update", {})
        result = json.loads(reply)
        assert result["exit"] == 0 and result["command"][:2] == ["yum", "update"]
        assert await x("host.call_plugin", h1, "updater.py", "check_update", {}) == "[]"
        installed = (await x("host.get_other_config", h1))["rpm_patch_installation_time"]
        assert abs(float(installed) - time.time()) < 60


async def test_call_plugin_answers_and_errors(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    a2 = host_ref(pool, "a2")
    async with Xapi(master(sim, "Pool A")) as x:
        assert await x("host.call_plugin", a2, "updater.py", "check_update", {}) == "[]"
        assert await x("host.call_plugin", a2, "raid.py", "check_raid_pool", {}) == "{}"
        error = await x.fails("host.call_plugin", a2, "nope.py", "check", {})
        assert error == ["XENAPI_MISSING_PLUGIN", "nope.py"]
        error = await x.fails("host.call_plugin", a2, "raid.py", "nope", {})
        assert error == ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "nope"]
        error = await x.fails("host.call_plugin", "OpaqueRef:x", "raid.py", "check_raid_pool", {})
        assert error == ["HANDLE_INVALID", "host", "OpaqueRef:x"]
        pool.set_host_offline("a3")
        error = await x.fails("host.call_plugin", host_ref(pool, "a3"), "raid.py", "x", {})
        assert error == ["HOST_OFFLINE", host_ref(pool, "a3")]


async def test_secure_boot_readiness(small: Simulator) -> None:
    pool = small.pool("P")
    async with Xapi(master(small, "P")) as x:
        for name, (*_, expected) in SECURE_BOOT_VMS.items():
            vm = vm_ref(pool, name)
            assert await x("VM.get_secureboot_readiness", vm) == expected, name
        # It follows the VM's record: firmware, platform, NVRAM, set through the API.
        vm = vm_ref(pool, "bios")
        await x("VM.add_to_HVM_boot_params", vm, "firmware", "uefi")
        assert await x("VM.get_secureboot_readiness", vm) == "disabled"
        await x("VM.add_to_platform", vm, "secureboot", "true")
        assert await x("VM.get_secureboot_readiness", vm) == "first_boot"
        await x("VM.set_NVRAM", vm, {"EFI-variables": efi_variables_blob(["PK", "KEK", "db"])})
        assert await x("VM.get_secureboot_readiness", vm) == "ready_no_dbx"
        bad = "OpaqueRef:nope"
        assert await x.fails("VM.get_secureboot_readiness", bad) == ["HANDLE_INVALID", "VM", bad]
        error = await x.fails("VM.get_secureboot_readiness")
        assert error[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"


async def test_running_vms_have_consoles_that_follow_them(sim: Simulator) -> None:
    a, b = sim.pool("Pool A"), sim.pool("Pool B")
    web01, a2 = vm_ref(a, "web-01"), host_ref(a, "a2")
    async with Xapi(master(sim, "Pool A")) as x:
        (console,) = await x("VM.get_consoles", web01)
        rec = await x("console.get_record", console)
        assert rec["protocol"] == "rfb" and rec["VM"] == web01
        assert rec["location"] == f"https://127.0.1.1/console?uuid={rec['uuid']}"
        assert await x("VM.get_consoles", vm_ref(a, "halted-01")) == []
        dom0 = await x("host.get_control_domain", host_ref(a, "a3"))
        protocols = sorted([await x("console.get_protocol", c)
                            for c in await x("VM.get_consoles", dom0)])  # fmt: skip
        assert protocols == ["rfb", "vt100"]
        # After a move within the pool the new host serves it.
        assert (await x.wait(await x("Async.VM.pool_migrate", web01, a2, {})))[
            "status"
        ] == "success"
        location = await x("console.get_location", console)
        assert location == f"https://127.0.1.2/console?uuid={rec['uuid']}"
    # Across pools the VM gets a console on its new host.
    vm = vm_ref(a, "runner-02")
    (vdi,) = disks_of(a, vm)
    (vif,) = vifs_of(a, vm)
    dest = await receive(sim, "Pool B", "b1", "B management")
    vdi_map, vif_map = {vdi: sr_ref(b, "B shared iSCSI")}, {vif: net_ref(b, "B management")}
    async with Xapi(master(sim, "Pool A")) as xa, Xapi(master(sim, "Pool B")) as xb:
        task = await xa("Async.VM.migrate_send", vm, dest, True, vdi_map, vif_map, {})
        rec = await xa.wait(task)
        assert rec["status"] == "success", rec
        remote = decode_result(rec["result"])
        (console,) = await xb("VM.get_consoles", remote)
        assert (await xb("console.get_location", console)).startswith("https://127.0.2.1/console?")
    # The console stream itself is not simulated, and says so.
    async with aiohttp.ClientSession() as http, http.get(f"{master(sim, 'Pool A')}console") as r:
        assert r.status == 501


async def test_pif_metrics(sim: Simulator) -> None:
    async with Xapi(master(sim, "Pool A")) as x:
        pifs = await x("PIF.get_all_records")
        assert len(pifs) == 6
        for pif in pifs.values():
            metrics = await x("PIF_metrics.get_record", pif["metrics"])
            assert metrics["carrier"] is True and metrics["duplex"] is True
            assert metrics["speed"] == "10000"
            assert metrics["vendor_name"] == "Intel Corporation" and metrics["device_name"]
            assert metrics["vendor_id"] == "8086" and metrics["pci_bus_path"].startswith("0000:")


async def test_host_boot_time_certificates_cpus_licence_and_iqn(sim: Simulator) -> None:
    pool = sim.pool("Pool B")
    async with Xapi(master(sim, "Pool B")) as x:
        for name in ("b1", "b2"):
            host = host_ref(pool, name)
            rec = await x("host.get_record", host)
            booted = float(rec["other_config"]["boot_time"])
            assert time.time() - 30 * 86400 < booted < time.time() - 3600
            assert booted < float(rec["other_config"]["agent_start_time"]) < time.time()
            # The certificate record describes the certificate the host serves.
            (cert_ref,) = rec["certificates"]
            cert = await x("Certificate.get_record", cert_ref)
            assert cert["host"] == host and cert["type"] == "host"
            pem = await x("host.get_server_certificate", host)
            der = ssl.PEM_cert_to_DER_cert(pem)
            digest = hashlib.sha256(der).hexdigest().upper()
            assert cert["fingerprint"].replace(":", "") == digest
            not_after = datetime.strptime(cert["not_after"].value, "%Y%m%dT%H:%M:%SZ")
            assert not_after.replace(tzinfo=UTC) > datetime.now(UTC)
            # One host_cpu per logical CPU.
            cpus = [await x("host_cpu.get_record", c) for c in rec["host_CPUs"]]
            assert sorted(int(c["number"]) for c in cpus) == list(range(32))
            assert {c["modelname"] for c in cpus} == {rec["cpu_info"]["modelname"]}
            assert rec["license_params"]["expiry"] == "20300101T00:00:00Z"
            assert rec["iscsi_iqn"].startswith("iqn.") and rec["iscsi_iqn"].endswith(
                rec["uuid"][:8]
            )
            assert rec["other_config"]["iscsi_iqn"] == rec["iscsi_iqn"]
