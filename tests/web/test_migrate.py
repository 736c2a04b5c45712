"""The acceptance of issue 9 in the real xo-web: sign in through /signin, the home page lists
every VM of the lab, a VM page renders with its Migrate button, and migrations chosen in xo-web's
Migrate dialog (within a pool, and across pools with the SR and networks picked as a user picks
them) end with the VM on its target, as the API shows; meanwhile the XAPI task is shown with its
progress on the VM page ("Current status") and on the Tasks page. No uncaught exception in the
browser on those pages."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import SIM_TIME_SCALE
from tests.migrations.conftest import Lab
from tests.web.harness import WebUi

pytestmark = pytest.mark.timeout(120)

PERCENT = re.compile(r"Async\.VM\.pool_migrate: (\d+)%")


async def signed_in(ui: WebUi) -> None:
    await ui.open("/")
    assert ui.path() == "/signin"
    await ui.sign_in()
    await ui.wait_app_loaded()
    await ui.dismiss_modal()


async def open_migrate_dialog(ui: WebUi, vm_id: str, vm_name: str) -> None:
    await ui.open(f"/#/vms/{vm_id}/general")
    await ui.page.locator("h1, h2", has_text=vm_name).first.wait_for()
    migrate = ui.page.locator("button:has(i.xo-icon-vm-migrate)")
    await migrate.click()
    await ui.modal().get_by_text("Migrate VM", exact=True).wait_for()


async def breadcrumb_shows(ui: WebUi, host: str, pool: str) -> None:
    """The VM page's header names the VM's pool and host (links to them)."""
    header = ui.page.locator("a", has_text=re.compile(rf"^\s*{host}\s*$")).first
    await header.wait_for(timeout=15_000)
    await ui.page.locator("a", has_text=re.compile(rf"^\s*{pool}\s*$")).first.wait_for()


async def test_home_lists_every_vm_of_the_lab(web_lab: Lab, ui: WebUi) -> None:
    names = sorted(vm["name_label"] for vm in (await web_lab.objects(type="VM")).values())
    await signed_in(ui)
    await ui.home_lists_vms(names)
    assert ui.uncaught == []


async def test_intra_pool_migration_through_the_dialog_with_live_progress(
    web_lab: Lab, ui: WebUi
) -> None:
    vm = await web_lab.id_of("VM", "web-01")
    a2 = await web_lab.id_of("host", "a2")
    await signed_in(ui)
    await open_migrate_dialog(ui, vm, "web-01")
    dialog = ui.modal()
    await ui.choose(dialog, "Select a destination host:", re.compile(r"^\s*a2 \("))
    # Slow enough (a few seconds) to watch the XAPI task go, as a user would.
    web_lab.sim.timing.time_scale = 1.0
    try:
        await dialog.locator(".modal-footer button", has_text="OK").click()
        await dialog.wait_for(state="hidden")
        status = ui.page.get_by_text("Current status:")
        await status.wait_for(timeout=10_000)
        seen: set[int] = set()
        for _ in range(8):
            text = await ui.page.locator("body").inner_text()
            seen.update(int(p) for p in PERCENT.findall(text))
            await asyncio.sleep(0.25)
        # The Tasks page lists the pool's XAPI task with its progress bar.
        await ui.open("/#/tasks")
        row = ui.page.locator("tr", has_text="Async.VM.pool_migrate").first
        await row.wait_for(timeout=10_000)
        for _ in range(6):
            value = await row.locator("progress").get_attribute("value")
            if value is not None:
                seen.add(round(float(value)))
            await asyncio.sleep(0.25)
        assert ui.calls("vm.migrate") == [{"vm": vm, "targetHost": a2}]
        assert await ui.wait_rpc_answer("vm.migrate", 30_000) is True
    finally:
        web_lab.sim.timing.time_scale = SIM_TIME_SCALE
    assert len(seen) >= 2 and all(0 <= p < 100 for p in seen), seen  # it moved, live
    assert (await web_lab.get(vm))["$container"] == a2
    await ui.open(f"/#/vms/{vm}/general")
    await breadcrumb_shows(ui, "a2", "Pool A")
    assert ui.uncaught == []


async def test_cross_pool_migration_through_the_dialog(web_lab: Lab, ui: WebUi) -> None:
    vm = await web_lab.id_of("VM", "web-02")
    b1 = await web_lab.id_of("host", "b1")
    local_b1 = await web_lab.id_of("SR", "B local b1")
    migration_net = await web_lab.id_of("network", "B migration")
    management_b = await web_lab.id_of("network", "B management")
    vifs = (await web_lab.get(vm))["VIFs"]
    vif = await web_lab.get(vifs[0])
    vif_label = re.compile(rf"^{re.escape(vif['MAC'])} \(")
    await signed_in(ui)
    await open_migrate_dialog(ui, vm, "web-02")
    dialog = ui.modal()
    await ui.choose(dialog, "Select a destination host:", re.compile(r"^\s*b1 \("))
    # Across pools xo-web asks where the disks and the network cards go.
    await dialog.get_by_text("Select a destination SR", exact=True).wait_for()
    await ui.choose(dialog, "Select a destination SR", "B local b1")
    await ui.choose(dialog, "Select a migration network:", "B migration")
    await ui.choose(dialog, vif_label, "B management")
    await dialog.locator(".modal-footer button", has_text="OK").click()
    await dialog.wait_for(state="hidden")
    assert await ui.wait_rpc_answer("vm.migrate", 60_000) is True
    (sent,) = ui.calls("vm.migrate")
    assert sent["targetHost"] == b1 and sent["sr"] == local_b1
    assert sent["migrationNetwork"] == migration_net
    assert sent["mapVifsNetworks"] == {vif["id"]: management_b}

    moved = await web_lab.get(vm)
    assert moved["$container"] == b1
    for vbd_id in moved["$VBDs"]:
        vbd = await web_lab.get(vbd_id)
        if vbd["is_cd_drive"] or not vbd["VDI"]:
            continue
        assert (await web_lab.get(vbd["VDI"]))["$SR"] == local_b1
    assert (await web_lab.get(moved["VIFs"][0]))["$network"] == management_b
    await ui.open(f"/#/vms/{vm}/general")
    await breadcrumb_shows(ui, "b1", "Pool B")
    assert ui.uncaught == []
