"""Issue 12 in the real xo-web: Settings > ACLs lists the entries and adds one as an admin
picks it (user, object, role), and a non-admin signed into xo-web gets and shows only the
objects its ACLs let it view."""

from __future__ import annotations

import json
import re

import pytest

from tests.migrations.conftest import Lab
from tests.web.harness import WebUi

pytestmark = pytest.mark.timeout(120)


async def test_the_acl_page_lists_and_adds_entries(web_lab: Lab, ui: WebUi) -> None:
    op = await web_lab.client.call("user.create", {"email": "op@x.net", "password": "pw"})
    pool_a = await web_lab.id_of("pool", "Pool A")
    web_01 = await web_lab.id_of("VM", "web-01")
    await web_lab.client.call("acl.add", {"subject": op, "object": pool_a, "action": "viewer"})
    await ui.open("/")
    await ui.sign_in()
    await ui.wait_app_loaded()
    await ui.dismiss_modal()
    await ui.open("/#/settings/acls")
    page = ui.page
    # The entry added over the API, as xo-web resolves it: user, object, role.
    table = page.locator("table")
    row = table.locator("tr", has_text="op@x.net")
    await row.get_by_text("Pool A", exact=True).wait_for()
    await row.get_by_text("Viewer", exact=True).wait_for()

    # A user picks a subject, an object and a role, then Create.
    async def pick(placeholder: str, typed: str, option: str | re.Pattern[str]) -> None:
        select = page.locator(".Select", has=page.get_by_text(placeholder)).first
        await select.locator(".Select-control").click()
        await page.keyboard.type(typed)
        await page.locator(".Select-option", has_text=option).first.click()
        if await page.locator(".Select-menu-outer").count():
            await page.keyboard.press("Escape")  # a multi-select stays open over the next one

    await pick("Choose user(s) and/or group(s)", "op@", "op@x.net")
    await pick("Select object(s)", "web-01", re.compile(r"^\s*web-01 \("))
    await pick("Choose a role", "Adm", "Admin")
    await page.locator("button", has_text="Create").click()
    await table.locator("tr", has_text="web-01").get_by_text("Admin", exact=True).wait_for()
    assert {"subject": op, "object": web_01, "action": "admin"} in ui.calls("acl.add")
    entries = await web_lab.client.call("acl.get")
    assert {(e["subject"], e["object"], e["action"]) for e in entries} == {
        (op, pool_a, "viewer"),
        (op, web_01, "admin"),
    }
    assert ui.uncaught == []


async def test_a_non_admin_signed_into_xo_web_sees_only_its_objects(
    web_lab: Lab, ui: WebUi
) -> None:
    everything = await web_lab.client.call("xo.getAllObjects")
    pool_a = await web_lab.id_of("pool", "Pool A")
    names_a = sorted(
        o["name_label"] for o in everything.values() if o["type"] == "VM" and o["$pool"] == pool_a
    )
    names_b = [o["name_label"] for o in everything.values() if o["type"] == "VM"]
    names_b = [n for n in names_b if n not in names_a]
    op = await web_lab.client.call("user.create", {"email": "op@x.net", "password": "pw"})
    await web_lab.client.call("acl.add", {"subject": op, "object": pool_a, "action": "viewer"})

    await ui.open("/")
    async with ui.page.expect_response(lambda r: r.url.endswith(".ndjson")) as download:
        await ui.sign_in("op@x.net", "pw")
        await ui.wait_app_loaded()
    # What the browser was sent: Pool A's objects only.
    objects = [json.loads(line) for line in (await (await download.value).text()).splitlines()]
    assert objects and all(o["$pool"] == pool_a for o in objects)
    assert len(objects) < len(everything)
    # What the user sees: Pool A's VMs on the home page, none of Pool B's.
    await ui.dismiss_modal()
    await ui.home_lists_vms(names_a)
    body = await ui.page.locator("body").inner_text()
    assert names_b and not any(name in body for name in names_b)
    assert ui.uncaught == []
