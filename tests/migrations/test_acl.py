"""Issue 12's acceptance with real non-admin users and groups over the WebSocket, on the
simulated lab: an operator migrates what its ACLs cover and is refused the rest; rights
through groups and their removal apply at the next call; a viewer gets only the objects under
its rights, from xo.getAllObjects and in pushes, and a VM migrated out of its view leaves it;
admins still see everything. Also the migration objects and the REST API as non-admins."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import pytest

from tests.helpers import wait_until
from tests.migrations.conftest import Lab
from tests.server.xo_client import RpcError, XoClient

pytestmark = pytest.mark.timeout(120)


async def signed_in_user(lab: Lab, email: str) -> tuple[str, XoClient]:
    user_id = await lab.client.call("user.create", {"email": email, "password": "pw"})
    client = await XoClient.connect(lab.server.ws_url)
    lab.clients.append(client)
    await client.sign_in(email, "pw")
    return user_id, client


async def error_of(client: XoClient, method: str, params: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(RpcError) as info:
        await client.call(method, params, timeout=60)
    return info.value.error


def refused(permission: str, obj_id: str) -> dict[str, Any]:
    return {
        "message": "not enough permissions",
        "code": 2,
        "data": {"permission": permission, "object": {"id": obj_id}},
    }


async def disks_of(lab: Lab, vm_id: str) -> list[str]:
    vm = await lab.get(vm_id)
    vdis = []
    for vbd_id in vm["$VBDs"]:
        vbd = await lab.get(vbd_id)
        if not vbd["is_cd_drive"]:
            vdis.append(vbd["VDI"])
    return vdis


async def test_an_operator_of_pool_a_migrates_there_and_is_refused_elsewhere(lab: Lab) -> None:
    pool_a = await lab.id_of("pool", "Pool A")
    a2, a3, b2 = [await lab.id_of("host", h) for h in ("a2", "a3", "b2")]
    web_01, app_01, b_web = [await lab.id_of("VM", v) for v in ("web-01", "app-01", "b-web-01")]
    sr_b = await lab.id_of("SR", "B shared iSCSI")
    op, client = await signed_in_user(lab, "op@x.net")
    await lab.client.call("acl.add", {"subject": op, "object": pool_a, "action": "admin"})
    assert await client.call("acl.getCurrentPermissions") == {
        pool_a: {"view": True, "operate": True, "administrate": True}
    }

    # Within Pool A: a plan, then the move itself.
    plan = await client.call("migration.plan", {"vm": web_01, "targetHost": a2})
    assert plan["mode"] == "pool_migrate"
    assert await client.call("vm.migrate", {"vm": web_01, "targetHost": a2}, timeout=60) is True
    assert (await lab.get(web_01))["$container"] == a2

    # A VM of Pool B, a target host outside its rights, an SR of Pool B in mapVdisSrs: code 2
    # naming the object, and nothing moves.
    assert await error_of(client, "vm.migrate", {"vm": b_web, "targetHost": b2}) == refused(
        "administrate", b_web
    )
    assert await error_of(client, "vm.migrate", {"vm": web_01, "targetHost": b2}) == refused(
        "administrate", b2
    )
    vdi = (await disks_of(lab, app_01))[0]
    move = {"vm": app_01, "targetHost": a3, "mapVdisSrs": {vdi: sr_b}}
    assert await error_of(client, "vm.migrate", move) == refused("administrate", sr_b)
    assert await error_of(client, "migration.start", move) == refused("administrate", sr_b)
    # An SR it cannot see gets the same answer whether it exists or not (an admin is told).
    missing = {**move, "mapVdisSrs": {vdi: "no-such-sr"}}
    assert await error_of(client, "vm.migrate", missing) == refused("administrate", "no-such-sr")
    assert (await lab.error_of("vm.migrate", missing))["code"] == 1
    assert await error_of(
        client, "vm.migrate_pool", {"id": b_web, "target_host_id": a2}
    ) == refused("administrate", b_web)
    # Batches stay for admins.
    error = await error_of(client, "migration.evacuate", {"host": a2, "dryRun": True})
    assert error["data"] == {"permission": "admin", "object": {}}
    assert (await lab.get(app_01))["$container"] != a3
    assert (await lab.get(b_web))["$pool"] != pool_a


async def test_rights_through_a_group_and_their_removal_apply_at_the_next_call(lab: Lab) -> None:
    web_02 = await lab.id_of("VM", "web-02")
    a1, a3 = await lab.id_of("host", "a1"), await lab.id_of("host", "a3")
    op, client = await signed_in_user(lab, "op@x.net")
    team = await lab.client.call("group.create", {"name": "team"})
    for obj in (web_02, a1, a3):
        await lab.client.call("acl.add", {"subject": team, "object": obj, "action": "admin"})
    move = {"vm": web_02, "targetHost": a3}
    assert await error_of(client, "migration.plan", move) == refused("view", web_02)

    await lab.client.call("group.addUser", {"id": team, "userId": op})
    assert (await client.call("migration.plan", move))["mode"] == "pool_migrate"
    # Leaving the group: refused from the next call on, the same connection.
    await lab.client.call("group.removeUser", {"id": team, "userId": op})
    assert await error_of(client, "vm.migrate", move) == refused("administrate", web_02)
    await lab.client.call("group.setUsers", {"id": team, "userIds": [op]})
    assert await client.call("vm.migrate", move, timeout=60) is True
    # acl.remove: the next call is refused, without reconnecting.
    await lab.client.call("acl.remove", {"subject": team, "object": a1, "action": "admin"})
    back = {"vm": web_02, "targetHost": a1}
    assert await error_of(client, "vm.migrate", back) == refused("administrate", a1)
    assert (await lab.get(web_02))["$container"] == a3


async def collect(client: XoClient, seconds: float) -> list[dict[str, Any]]:
    """The `all` notifications `client` gets within `seconds`."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            out.append((await client.next_notification(left))["params"])
        except TimeoutError:
            break
    return out


async def test_a_viewer_gets_only_its_objects_and_a_vm_leaving_its_view_exits(lab: Lab) -> None:
    a1, a2 = await lab.id_of("host", "a1"), await lab.id_of("host", "a2")
    pool_a = await lab.id_of("pool", "Pool A")
    web_01 = await lab.id_of("VM", "web-01")
    everything = await lab.client.call("xo.getAllObjects")
    viewer, client = await signed_in_user(lab, "viewer@x.net")
    assert await client.call("xo.getAllObjects") == {}  # no entry: nothing
    await lab.client.call("acl.add", {"subject": viewer, "object": a1, "action": "viewer"})

    seen = await client.call("xo.getAllObjects")
    on_a1 = {
        o["name_label"] for o in everything.values() if o["type"] == "VM" and o["$container"] == a1
    }
    assert on_a1 and {o["name_label"] for o in seen.values() if o["type"] == "VM"} == on_a1
    assert a1 in seen and a2 not in seen and pool_a not in seen
    assert all(o["$pool"] == pool_a for o in seen.values())
    web_01_vifs = everything[web_01]["VIFs"]
    assert web_01 in seen and set(web_01_vifs) <= set(seen)
    # Filters and the ndjson download apply to the same view.
    assert set(await client.call("xo.getAllObjects", {"filter": {"type": "host"}})) == {a1}
    url = (await client.call("xo.getAllObjects", {"ndjson": True}))["$getFrom"]
    async with aiohttp.ClientSession() as http, http.get(lab.server.base + url) as resp:
        lines = (await resp.read()).splitlines()
    assert len(lines) == len(seen)
    # Admins still get everything.
    assert len(await lab.client.call("xo.getAllObjects")) >= len(everything)

    # web-01 moves to a2: the viewer gets its exit (and its cards'), never a2 or its VMs;
    # the admin's connection gets the move.
    await collect(client, 0.2)  # what the sign-in and the entry brought
    admin_watch = await lab.connect()
    assert await lab.migrate("vm.migrate", {"vm": web_01, "targetHost": a2}) is True
    pushed = await collect(client, 1.0)
    exits = {i for p in pushed if p["type"] == "exit" for i in p["items"]}
    entered = {i: o for p in pushed if p["type"] == "enter" for i, o in p["items"].items()}
    assert web_01 in exits and set(web_01_vifs) <= exits
    assert web_01 not in entered and a2 not in entered
    assert all(o.get("$pool") == pool_a for o in entered.values())
    # Its migration was seen while the VM was on a1, and left with it.
    moves = {i for i, o in entered.items() if o["type"] == "migration"}
    assert moves and moves <= exits
    after = await client.call("xo.getAllObjects")
    assert web_01 not in after and not moves & set(after)
    admin_pushed = await collect(admin_watch, 0.5)
    assert any(web_01 in p["items"] for p in admin_pushed if p["type"] == "enter")

    # A right on the VM itself: it enters at once, without reconnecting; removed: it exits.
    await lab.client.call("acl.add", {"subject": viewer, "object": web_01, "action": "viewer"})
    pushed = await collect(client, 0.5)
    assert any(web_01 in p["items"] for p in pushed if p["type"] == "enter")
    await lab.client.call("acl.remove", {"subject": viewer, "object": web_01, "action": "viewer"})
    pushed = await collect(client, 0.5)
    assert any(web_01 in p["items"] for p in pushed if p["type"] == "exit")

    # Made an admin: it gets everything it did not have; back to a user: it loses it again.
    await lab.client.call("user.set", {"id": viewer, "permission": "admin"})
    pushed = await collect(client, 0.5)
    assert {i for p in pushed if p["type"] == "enter" for i in p["items"]} >= {a2, web_01}
    await lab.client.call("user.set", {"id": viewer, "permission": "none"})
    pushed = await collect(client, 0.5)
    assert {i for p in pushed if p["type"] == "exit" for i in p["items"]} >= {a2, web_01, pool_a}


async def test_a_vm_moved_to_another_pool_leaves_the_view_of_the_first_pools_viewer(
    lab: Lab,
) -> None:
    pool_a, pool_b = await lab.id_of("pool", "Pool A"), await lab.id_of("pool", "Pool B")
    web_02 = await lab.id_of("VM", "web-02")
    b1 = await lab.id_of("host", "b1")
    viewer, client = await signed_in_user(lab, "viewer@x.net")
    await lab.client.call("acl.add", {"subject": viewer, "object": pool_a, "action": "viewer"})
    assert web_02 in await client.call("xo.getAllObjects")
    await collect(client, 0.2)
    move = {"id": web_02, "target_host_id": b1}
    assert await lab.migrate("vm.migrate_pool", move) is True
    await wait_until(lambda: _in_pool(lab, web_02, pool_b))
    pushed = await collect(client, 1.0)
    # It was seen running in Pool A until it had arrived, then left; nothing of Pool B came.
    assert any(web_02 in p["items"] for p in pushed if p["type"] == "exit")
    entered = [o for p in pushed if p["type"] == "enter" for o in p["items"].values()]
    assert all(o.get("$pool") in (pool_a, None) for o in entered), entered
    assert web_02 not in await client.call("xo.getAllObjects")


async def _in_pool(lab: Lab, vm_id: str, pool: str) -> bool:
    return (await lab.get(vm_id))["$pool"] == pool


async def test_migrations_are_seen_by_their_owner_and_the_vms_viewers(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01  # slow enough to act on it while it runs
    a1 = await lab.id_of("host", "a1")
    db_01 = await lab.id_of("VM", "db-01")
    b1 = await lab.id_of("host", "b1")
    owner, mine = await signed_in_user(lab, "owner@x.net")
    other, theirs = await signed_in_user(lab, "other@x.net")
    for obj in (db_01, b1):
        await lab.client.call("acl.add", {"subject": owner, "object": obj, "action": "admin"})
    migration = await mine.call("migration.start", {"vm": db_01, "targetHost": b1})
    assert (await mine.call("migration.get", {"id": migration}))["user"] == owner
    assert [r["id"] for r in await mine.call("migration.getAll")] == [migration]

    # Someone else: no right on the VM, so the migration is as unknown to it as a missing one.
    for method in ("migration.get", "migration.wait"):
        assert await error_of(theirs, method, {"id": migration}) == refused("view", migration) | {
            "data": {"permission": "view", "object": {"id": migration, "type": "migration"}}
        }
    assert await theirs.call("migration.getAll") == []
    cancel_refused = {
        "permission": "administrate",
        "object": {"id": migration, "type": "migration"},
    }
    assert (await error_of(theirs, "migration.cancel", {"id": migration}))["data"] == cancel_refused
    assert (await error_of(theirs, "migration.cancel", {"id": "nope"}))["data"] == {
        "permission": "administrate",
        "object": {"id": "nope", "type": "migration"},
    }
    # A viewer of the VM sees it, but may not cancel it; an administrator of the VM may.
    await lab.client.call("acl.add", {"subject": other, "object": a1, "action": "viewer"})
    assert (await theirs.call("migration.get", {"id": migration}))["vm"] == db_01
    assert (await error_of(theirs, "migration.cancel", {"id": migration}))["data"] == cancel_refused
    await lab.client.call("acl.add", {"subject": other, "object": db_01, "action": "admin"})
    result = await theirs.call("migration.cancel", {"id": migration}, timeout=30)
    assert result["status"] in ("cancelled", "success")
    # The owner still sees it after its VM left its view (it stays the owner's).
    await lab.client.call("acl.remove", {"subject": owner, "object": db_01, "action": "admin"})
    assert (await mine.call("migration.get", {"id": migration}))["id"] == migration


def basic(email: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


async def test_the_rest_api_as_a_non_admin(lab: Lab) -> None:
    pool_a = await lab.id_of("pool", "Pool A")
    a2 = await lab.id_of("host", "a2")
    b1 = await lab.id_of("host", "b1")
    web_02, b_web = await lab.id_of("VM", "web-02"), await lab.id_of("VM", "b-web-01")
    op, _client = await signed_in_user(lab, "op@x.net")
    await lab.client.call("acl.add", {"subject": op, "object": pool_a, "action": "admin"})
    async with aiohttp.ClientSession(lab.server.base, headers=basic("op@x.net", "pw")) as http:

        async def get(path: str) -> tuple[int, Any]:
            async with http.get(path) as resp:
                return resp.status, await resp.json()

        status, hosts = await get("/rest/v0/hosts")
        assert status == 200 and b1 not in " ".join(hosts) and any(a2 in h for h in hosts)
        status, pools = await get("/rest/v0/pools")
        assert pools == [f"/rest/v0/pools/{pool_a}"]
        status, body = await get(f"/rest/v0/vms/{b_web}")
        assert status == 403 and body["data"] == {"permission": "view", "object": {"id": b_web}}
        assert (await get("/rest/v0/vms/nope"))[0] == 403

        body_b = {"hostId": b1}
        async with http.post(f"/rest/v0/vms/{web_02}/actions/migrate", json=body_b) as resp:
            assert resp.status == 403
            assert (await resp.json())["data"]["object"] == {"id": b1}
        async with http.post(
            f"/rest/v0/vms/{web_02}/actions/migrate?sync=true", json={"hostId": a2}
        ) as resp:
            assert resp.status == 204, await resp.text()
        status, tasks = await get("/rest/v0/tasks?fields=*")
        assert status == 200 and [t["properties"]["objectId"] for t in tasks] == [web_02]
    # Another non-admin sees no task and cannot read this one.
    await signed_in_user(lab, "other@x.net")
    task_id = tasks[0]["id"]
    async with aiohttp.ClientSession(lab.server.base, headers=basic("other@x.net", "pw")) as http:
        async with http.get("/rest/v0/tasks") as resp:
            assert await resp.json() == []
        async with http.get(f"/rest/v0/tasks/{task_id}") as resp:
            assert resp.status == 403

    await wait_until(lambda: _moved(lab, web_02, a2))


async def _moved(lab: Lab, vm_id: str, host: str) -> bool:
    return (await lab.get(vm_id))["$container"] == host
