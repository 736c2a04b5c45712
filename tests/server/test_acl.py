"""Groups, ACL entries and roles over the WebSocket (xo-server's acl.*, group.*, role.*), as
an admin manages them and as the users concerned see them: their `groups`, their
`acl.getCurrentPermissions`, persistence across a restart, bad input and quotas."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from server.limits import InputLimits
from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.xo_client import XoClient

NEED_ADMIN = {
    "message": "not enough permissions",
    "code": 2,
    "data": {"permission": "admin", "object": {}},
}


async def error_of(client: XoClient, method: str, params: Any = None) -> dict[str, Any]:
    response = await client.request(method, params)
    assert "error" in response, response
    return response["error"]


async def user_and_client(
    server: RunningServer, connect: Any, admin: XoClient, email: str
) -> tuple[str, XoClient]:
    user_id = await admin.call("user.create", {"email": email, "password": "pw"})
    client = await connect()
    await client.sign_in(email, "pw")
    return user_id, client


async def test_groups_as_xo_server_keeps_them(server: RunningServer, connect) -> None:
    admin = await connect(signed_in=True)
    bob, bob_client = await user_and_client(server, connect, admin, "bob@x.net")
    eve = await admin.call("user.create", {"email": "eve@x.net", "password": "pw"})

    ops = await admin.call("group.create", {"name": "ops"})
    devs = await admin.call("group.create", {"name": "devs"})
    assert await admin.call("group.getAll") == [
        {"id": ops, "name": "ops", "users": []},
        {"id": devs, "name": "devs", "users": []},
    ]
    assert await admin.call("group.addUser", {"id": ops, "userId": bob}) is True
    assert await admin.call("group.addUser", {"id": ops, "userId": bob}) is True  # no duplicate
    assert await admin.call("group.setUsers", {"id": devs, "userIds": [eve, bob]}) is True
    assert await admin.call("group.set", {"id": devs, "name": "developers"}) is True
    assert await admin.call("group.getAll") == [
        {"id": ops, "name": "ops", "users": [bob]},
        {"id": devs, "name": "developers", "users": [eve, bob]},
    ]
    # Both sides: the user's `groups`, as session.getUser and user.getAll show them; the
    # connection already signed in sees its new groups without signing in again.
    assert (await bob_client.call("session.getUser"))["groups"] == [ops, devs]
    users = {u["id"]: u for u in await admin.call("user.getAll")}
    assert users[bob]["groups"] == [ops, devs] and users[eve]["groups"] == [devs]

    assert await admin.call("group.removeUser", {"id": devs, "userId": bob}) is True
    assert await admin.call("group.setUsers", {"id": ops, "userIds": []}) is True
    assert (await bob_client.call("session.getUser"))["groups"] == []
    assert await admin.call("group.delete", {"id": devs}) is True
    assert await admin.call("group.getAll") == [{"id": ops, "name": "ops", "users": []}]
    users = {u["id"]: u for u in await admin.call("user.getAll")}
    assert users[eve]["groups"] == []

    # Unknown ids: code 1, nothing changed; every group.* method is for admins.
    assert await error_of(admin, "group.addUser", {"id": ops, "userId": "nobody"}) == {
        "message": "no such user nobody",
        "code": 1,
        "data": {"id": "nobody", "type": "user"},
    }
    assert (await error_of(admin, "group.setUsers", {"id": ops, "userIds": [bob, "x"]}))[
        "code"
    ] == 1
    assert (await error_of(admin, "group.delete", {"id": "nope"}))["data"] == {
        "id": "nope",
        "type": "group",
    }
    assert (await error_of(admin, "group.set", {"id": "nope", "name": "x"}))["code"] == 1
    assert await admin.call("group.getAll") == [{"id": ops, "name": "ops", "users": []}]
    for method, params in (
        ("group.create", {"name": "mine"}),
        ("group.getAll", None),
        ("group.addUser", {"id": ops, "userId": bob}),
        ("acl.add", {"subject": bob, "object": "x", "action": "admin"}),
        ("acl.get", None),
    ):
        assert await error_of(bob_client, method, params) == NEED_ADMIN, method
    assert (await error_of(admin, "group.create", {"name": ""}))["code"] == 10


async def test_acl_entries_and_current_permissions(server: RunningServer, connect) -> None:
    admin = await connect(signed_in=True)
    bob, bob_client = await user_and_client(server, connect, admin, "bob@x.net")
    ops = await admin.call("group.create", {"name": "ops"})
    await admin.call("group.addUser", {"id": ops, "userId": bob})

    assert await bob_client.call("acl.getCurrentPermissions") == {}
    assert await admin.call("acl.getCurrentPermissions") == {}  # an admin's rights are no ACL
    await admin.call("acl.add", {"subject": bob, "object": "vm-1", "action": "viewer"})
    await admin.call("acl.add", {"subject": ops, "object": "vm-1", "action": "operator"})
    await admin.call("acl.add", {"subject": ops, "object": "pool-1", "action": "admin"})
    # Adding an entry again is not an error and stores nothing more.
    await admin.call("acl.add", {"subject": ops, "object": "pool-1", "action": "admin"})
    entries = await admin.call("acl.get")
    assert [(e["subject"], e["object"], e["action"]) for e in entries] == [
        (bob, "vm-1", "viewer"),
        (ops, "vm-1", "operator"),
        (ops, "pool-1", "admin"),
    ]
    assert len({e["id"] for e in entries}) == 3
    # The user's own entries and its groups', each role's permissions.
    assert await bob_client.call("acl.getCurrentPermissions") == {
        "vm-1": {"view": True, "operate": True},
        "pool-1": {"view": True, "operate": True, "administrate": True},
    }
    # Removing applies at the next call, without signing in again; a missing entry is no error.
    await admin.call("acl.remove", {"subject": ops, "object": "pool-1", "action": "admin"})
    await admin.call("acl.remove", {"subject": ops, "object": "pool-1", "action": "admin"})
    assert await bob_client.call("acl.getCurrentPermissions") == {
        "vm-1": {"view": True, "operate": True}
    }
    await admin.call("group.removeUser", {"id": ops, "userId": bob})
    assert await bob_client.call("acl.getCurrentPermissions") == {"vm-1": {"view": True}}

    # Bad input changes nothing: a subject that is no user or group, an unknown action.
    error = await error_of(admin, "acl.add", {"subject": "ghost", "object": "x", "action": "admin"})
    assert error == {
        "message": "no such user,group ghost",
        "code": 1,
        "data": {"id": "ghost", "type": ["user", "group"]},
    }
    error = await error_of(admin, "acl.add", {"subject": bob, "object": "x", "action": "owner"})
    assert error["code"] == 10
    assert error["data"]["errors"][0]["instancePath"] == "/action"
    assert error["data"]["errors"][0]["params"] == {
        "allowedValues": ["viewer", "operator", "admin", "view", "operate", "administrate"]
    }
    assert (await error_of(admin, "acl.add", {"subject": bob, "object": "x"}))["code"] == 10
    assert len(await admin.call("acl.get")) == 2

    # role.getAll: xo-server's three roles.
    assert [r["id"] for r in await bob_client.call("role.getAll")] == [
        "viewer",
        "operator",
        "admin",
    ]

    # Deleting a group deletes its entries; deleting a user deletes its entries too.
    await admin.call("group.delete", {"id": ops})
    assert [e["subject"] for e in await admin.call("acl.get")] == [bob]
    await admin.call("user.delete", {"id": bob})
    assert await admin.call("acl.get") == []


async def test_groups_and_entries_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server:
        admin = await XoClient.connect(server.ws_url)
        try:
            await admin.sign_in()
            bob = await admin.call("user.create", {"email": "bob@x.net", "password": "pw"})
            ops = await admin.call("group.create", {"name": "ops"})
            await admin.call("group.setUsers", {"id": ops, "userIds": [bob]})
            await admin.call("acl.add", {"subject": ops, "object": "pool-1", "action": "admin"})
            entries = await admin.call("acl.get")
        finally:
            await admin.close()
    async with running_server(make_config(tmp_path)) as server:
        admin = await XoClient.connect(server.ws_url)
        bob_client = await XoClient.connect(server.ws_url)
        try:
            await admin.sign_in()
            assert await admin.call("group.getAll") == [{"id": ops, "name": "ops", "users": [bob]}]
            assert await admin.call("acl.get") == entries
            await bob_client.sign_in("bob@x.net", "pw")
            assert await bob_client.call("acl.getCurrentPermissions") == {
                "pool-1": {"view": True, "operate": True, "administrate": True}
            }
        finally:
            await admin.close()
            await bob_client.close()


async def test_quotas_on_groups_and_entries(tmp_path: Path) -> None:
    limits = dataclasses.replace(InputLimits(), max_groups=2, max_acl_entries=2)
    async with running_server(make_config(tmp_path, limits=limits)) as server:
        admin = await XoClient.connect(server.ws_url)
        try:
            await admin.sign_in()
            me = (await admin.call("session.getUser"))["id"]
            await admin.call("group.create", {"name": "a"})
            await admin.call("group.create", {"name": "b"})
            assert await error_of(admin, "group.create", {"name": "c"}) == {
                "message": "forbidden operation: group.create",
                "code": 5,
                "data": {
                    "operation": "group.create",
                    "reason": "there are already 2 groups, the most allowed",
                },
            }
            for obj in ("o1", "o2"):
                await admin.call("acl.add", {"subject": me, "object": obj, "action": "viewer"})
            await admin.call("acl.add", {"subject": me, "object": "o2", "action": "viewer"})
            error = await error_of(
                admin, "acl.add", {"subject": me, "object": "o3", "action": "viewer"}
            )
            assert error["code"] == 5 and error["data"]["operation"] == "acl.add"
            assert len(await admin.call("group.getAll")) == 2
            assert len(await admin.call("acl.get")) == 2
        finally:
            await admin.close()
