"""user.* (xo-server api/user.mjs), what a non-admin user sees, and revocation: deleting a
user or a token closes the connections that use it."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.migrations.service import MigrationSettings
from server.xapi_errors import to_wire_error
from tests.helpers import expire_tokens, stored_bytes
from tests.migrations.conftest import lab_on
from tests.server.conftest import RunningServer
from tests.server.xo_client import XoClient
from xen.errors import XapiError
from xen.sim import Simulator

NEED_ADMIN = {
    "message": "not enough permissions",
    "code": 2,
    "data": {"permission": "admin", "object": {}},
}
VM = {"id": "v1", "type": "VM", "uuid": "v1", "$pool": "p1", "$poolId": "p1"}


async def error_of(client: XoClient, method: str, params: Any = None) -> dict[str, Any]:
    response = await client.request(method, params)
    assert "error" in response, response
    return response["error"]


async def signed_in_as(connect: Any, email: str, password: str) -> XoClient:
    client = await connect()
    await client.sign_in(email, password)
    return client


async def closed_within(client: XoClient, timeout: float = 5.0) -> bool:
    await asyncio.wait_for(client.closed.wait(), timeout)
    return True


async def test_user_lifecycle(server: RunningServer, connect) -> None:
    admin = await connect(signed_in=True)
    me = await admin.call("session.getUser")
    user_id = await admin.call("user.create", {"email": "bob@x.net", "password": "bob-pw"})
    assert str(uuid.UUID(user_id, version=4)) == user_id
    users = await admin.call("user.getAll")
    assert users == [
        me,
        {
            "id": user_id,
            "email": "bob@x.net",
            "groups": [],
            "permission": "none",
            "preferences": {},
        },
    ]
    assert "pw_hash" not in admin.frames[-1] and "scrypt" not in admin.frames[-1]

    # Duplicate email: xo-server's objectAlreadyExists naming the existing user.
    error = await error_of(admin, "user.create", {"email": "bob@x.net", "password": "x"})
    assert error == {
        "message": "user already exists",
        "code": 16,
        "data": {"objectId": user_id, "objectType": "user"},
    }
    # Strict params, as Ajv: required keys, no null for an optional one, no empty string.
    error = await error_of(admin, "user.create", {"email": "c@x.net"})
    assert error["code"] == 10
    assert error["data"]["errors"][0]["message"] == "must have required property 'password'"
    for bad in ({"permission": None}, {"password": ""}):
        error = await error_of(admin, "user.create", {"email": "c@x.net", "password": "p", **bad})
        assert error["code"] == 10

    bob = await signed_in_as(connect, "bob@x.net", "bob-pw")
    assert (await bob.call("session.getUser"))["permission"] == "none"

    # An admin changes another user's email, password and permission.
    assert (
        await admin.call(
            "user.set",
            {"id": user_id, "email": "robert@x.net", "password": "new-pw", "permission": "user"},
        )
        is True
    )
    # A new password ends the user's sessions: whoever held the old one is out.
    assert await closed_within(bob)
    robert = await signed_in_as(connect, "robert@x.net", "new-pw")
    assert (await robert.call("session.getUser"))["permission"] == "user"
    assert (
        await error_of(
            await connect(), "session.signIn", {"email": "robert@x.net", "password": "bob-pw"}
        )
    )["code"] == 3
    await asyncio.sleep(0.35)  # past the test config's 0.3 s sign-in throttling
    # Email taken by someone else; an unknown id.
    error = await error_of(admin, "user.set", {"id": user_id, "email": "admin@admin.net"})
    assert error == {
        "message": "user already exists",
        "code": 16,
        "data": {"objectId": me["id"], "objectType": "user"},
    }
    assert await error_of(admin, "user.set", {"id": "nope", "preferences": {}}) == {
        "message": "no such user nope",
        "code": 1,
        "data": {"id": "nope", "type": "user"},
    }
    # An admin may not change its own permission, nor delete itself.
    assert await error_of(admin, "user.set", {"id": me["id"], "permission": "none"}) == {
        "message": "a user cannot change its own permission",
        "code": 10,
        "data": {},
    }
    assert admin.frames[-1].startswith(
        '{"error":{"message":"a user cannot change its own permission","code":10,"data":{}}'
    )
    assert await error_of(admin, "user.delete", {"id": me["id"]}) == {
        "message": "a user cannot delete itself",
        "code": 10,
        "data": {},
    }

    # `user.delete user=<id>`: xo-server's id aliasing applies.
    assert await admin.call("user.delete", {"user": user_id}) is True
    assert [u["id"] for u in await admin.call("user.getAll")] == [me["id"]]
    error = await error_of(
        await connect(), "session.signIn", {"email": "robert@x.net", "password": "new-pw"}
    )
    assert error == {"message": "invalid credentials", "code": 3}
    assert await error_of(admin, "user.delete", {"id": user_id}) == {
        "message": f"no such user {user_id}",
        "code": 1,
        "data": {"id": user_id, "type": "user"},
    }
    # The password never reaches the database in clear.
    db_text = await stored_bytes(server.state.config.data_dir)
    assert b"new-pw" not in db_text and b"bob-pw" not in db_text


async def test_non_admin_user(server: RunningServer, connect) -> None:
    admin = await connect(signed_in=True)
    admin_id = (await admin.call("session.getUser"))["id"]
    uid = await admin.call(
        "user.create", {"email": "u@x.net", "password": "pw", "permission": "user"}
    )
    user = await signed_in_as(connect, "u@x.net", "pw")

    # Admin-only methods: xo-server's unauthorized('admin').
    for method, params in (
        ("user.create", {"email": "v@x.net", "password": "pw"}),
        ("user.delete", {"id": admin_id}),
        ("user.getAll", None),
        ("token.delete", {"tokens": ["x"]}),
        ("server.getAll", None),
    ):
        assert await error_of(user, method, params) == NEED_ADMIN, method
        assert user.frames[-1].startswith(
            '{"error":{"message":"not enough permissions","code":2,"data":{"permission":"admin","object":{}}}'
        )

    # A user edits its own preferences (merged; null removes a key).
    assert await user.call("user.set", {"id": uid, "preferences": {"lang": "fr", "theme": "dark"}})
    assert await user.call("user.set", {"id": uid, "preferences": {"theme": None, "x": 1}})
    assert (await user.call("session.getUser"))["preferences"] == {"lang": "fr", "x": 1}
    # ... but not its email, password or permission (xo-server's message, verbatim) ...
    for change in ({"password": "other"}, {"email": "z@x.net"}, {"permission": "admin"}):
        assert await error_of(user, "user.set", {"id": uid, **change}) == {
            "message": "this properties can only changed by an administrator",
            "code": 10,
            "data": {},
        }
    # ... nor anyone else's preferences (xo-server would allow it).
    assert await error_of(user, "user.set", {"id": admin_id, "preferences": {"a": 1}}) == NEED_ADMIN
    assert (await admin.call("session.getUser"))["preferences"] == {}

    # changePassword checks the old password.
    error = await error_of(user, "user.changePassword", {"oldPassword": "bad", "newPassword": "n"})
    assert error == {"message": "invalid credentials", "code": 3}
    await asyncio.sleep(0.35)  # changePassword goes through the sign-in throttle
    assert (
        await user.call("user.changePassword", {"oldPassword": "pw", "newPassword": "pw2"}) is True
    )
    await signed_in_as(connect, "u@x.net", "pw2")
    assert (
        await error_of(await connect(), "session.signIn", {"email": "u@x.net", "password": "pw"})
    )["code"] == 3
    # Not signed in: code 2 without a permission.
    anonymous = await connect()
    error = await error_of(
        anonymous, "user.changePassword", {"oldPassword": "a", "newPassword": "b"}
    )
    assert error == {"message": "not enough permissions", "code": 2, "data": {"object": {}}}

    # A permission change applies to the user's open connections from their next call
    # (xo-server reloads the user on every call).
    assert await admin.call("user.set", {"id": uid, "permission": "admin"})
    assert [u["email"] for u in await user.call("user.getAll")] == ["admin@admin.net", "u@x.net"]
    assert await admin.call("user.set", {"id": uid, "permission": "none"})
    assert await error_of(user, "user.getAll") == NEED_ADMIN
    # Errors that are not XO errors are hidden from non-admins, but a bad expiresIn only
    # quotes the caller's own value: everyone reads it.
    readable = {
        "code": -32000,
        "data": {"message": "invalid expiresIn duration: 10", "name": "Error"},
        "message": "invalid expiresIn duration: 10",
    }
    assert await error_of(user, "token.create", {"expiresIn": 10}) == readable
    assert await error_of(admin, "token.create", {"expiresIn": 10}) == readable


async def test_get_authentication_tokens(server: RunningServer, connect) -> None:
    admin = await connect(signed_in=True)
    admin_id = (await admin.call("session.getUser"))["id"]
    assert await admin.call("user.getAuthenticationTokens") == []
    before = int(time.time() * 1000)
    cli = await admin.call("token.create", {"client": {"id": "cli-1"}, "description": "xo-cli"})
    plain = await admin.call("token.create", {"expiresIn": "1 hour"})
    expired = await admin.call("token.create", {"description": "expired"})
    await expire_tokens(server.state, time.time() - 1, "expired")
    await admin.call("user.create", {"email": "o@x.net", "password": "pw"})
    other = await signed_in_as(connect, "o@x.net", "pw")
    await other.call("token.create", {"description": "not mine"})
    via_token = await connect()
    await via_token.call("session.signIn", {"token": cli})

    tokens = await admin.call("user.getAuthenticationTokens")
    frame = admin.frames[-1]
    for secret in (cli, plain, expired):
        assert secret not in frame  # never the token values
    assert len(tokens) == 2  # own, live tokens only
    by_desc = {t.get("description"): t for t in tokens}
    with_client = by_desc["xo-cli"]
    assert list(with_client) == [
        "client",
        "created_at",
        "description",
        "id",
        "user_id",
        "expiration",
        "last_uses",
    ]
    assert with_client["client"] == {"id": "cli-1"}
    assert with_client["user_id"] == admin_id
    assert before - 1000 <= with_client["created_at"] <= int(time.time() * 1000)
    assert with_client["expiration"] - with_client["created_at"] == pytest.approx(
        30 * 86400e3, abs=5e3
    )
    assert list(with_client["last_uses"]) == ["127.0.0.1"]  # the token sign-in above
    no_desc = by_desc[None]
    assert list(no_desc) == ["created_at", "id", "user_id", "expiration"]
    # The id is stable, differs per token and is no credential (xo-web shows and copies it).
    assert no_desc["id"] != with_client["id"]
    assert [t["id"] for t in await admin.call("user.getAuthenticationTokens")] == [
        t["id"] for t in tokens
    ]
    assert (await via_token.request("session.signIn", {"token": no_desc["id"]}))["error"][
        "code"
    ] == 3
    assert no_desc["expiration"] - no_desc["created_at"] == pytest.approx(3600e3, abs=5e3)
    assert [t["description"] for t in await other.call("user.getAuthenticationTokens")] == [
        "not mine"
    ]


async def test_deleting_a_user_closes_its_connections(server: RunningServer, connect) -> None:
    admin = await connect(signed_in=True)
    uid = await admin.call("user.create", {"email": "gone@x.net", "password": "pw"})
    by_password = await signed_in_as(connect, "gone@x.net", "pw")
    token = await by_password.call("token.create", {"description": "t"})
    by_token = await connect()
    await by_token.call("session.signIn", {"token": token})
    bystander = await connect()
    await bystander.call("session.signIn", {"email": "admin@admin.net", "password": "admin"})
    assert len(server.state.connections) == 4

    assert await admin.call("user.delete", {"id": uid}) is True
    assert await closed_within(by_password) and await closed_within(by_token)
    assert by_password.unexpected == [] and by_token.unexpected == []
    assert await server.state.storage.tokens_of(uid) == []  # its tokens went with it
    assert await bystander.call("system.getVersion") == "0.1"
    assert await admin.call("system.getVersion") == "0.1"
    await asyncio.sleep(0.05)
    assert len(server.state.connections) == 2
    again = await connect()
    assert (await error_of(again, "session.signIn", {"token": token}))["code"] == 3


async def test_deleting_a_token_closes_the_connections_signed_in_with_it(
    server: RunningServer, connect
) -> None:
    admin = await connect(signed_in=True)
    doomed = await admin.call("token.create", {"description": "doomed"})
    kept = await admin.call("token.create", {"description": "kept"})
    on_doomed, on_doomed_2, on_kept = await connect(), await connect(), await connect()
    for client, token in ((on_doomed, doomed), (on_doomed_2, doomed), (on_kept, kept)):
        await client.call("session.signIn", {"token": token})

    # token.delete (admin) from a password session: the token's two connections close.
    assert await admin.call("token.delete", {"tokens": [doomed]}) is True
    assert await closed_within(on_doomed) and await closed_within(on_doomed_2)
    assert await on_kept.call("system.getVersion") == "0.1"
    assert await admin.call("system.getVersion") == "0.1"

    # token.deleteOwn from the very connection that signed in with it: the reply still
    # arrives; then no more notifications, and the next request closes it without a reply.
    frames = len(on_kept.frames)
    assert await on_kept.call("token.deleteOwn", {"pattern": {"description": "kept"}}) is True
    assert len(on_kept.frames) == frames + 1
    server.state.store.set(VM)
    await admin.next_notification()  # the admin's session sees the change ...
    await asyncio.sleep(0.05)
    assert on_kept.notifications.empty()  # ... the revoked one does not
    with pytest.raises(ConnectionError):
        await on_kept.call("system.getVersion")
    assert await closed_within(on_kept)
    assert len(on_kept.frames) == frames + 1
    assert on_kept.unexpected == []

    # A pattern that matches nothing closes nothing.
    survivor = await connect()
    token = await admin.call("token.create", {"description": "survivor"})
    await survivor.call("session.signIn", {"token": token})
    assert await admin.call("token.delete", {"pattern": {"description": "none such"}}) is True
    assert await survivor.call("system.getVersion") == "0.1"


async def test_tokens_by_id_as_xo_web_edits_and_deletes_them(
    server: RunningServer, connect
) -> None:
    """xo-web's user page: token.set {id, description}, token.deleteOwn {tokens: [id]} and
    "sign out everywhere else" token.deleteOwn {pattern: {id: {__not: <cookie token>}}}."""
    admin = await connect(signed_in=True)
    mine = await admin.call("token.create", {"description": "browser"})
    other = await admin.call("token.create", {"description": "other"})
    third = await admin.call("token.create", {"description": "third"})
    browser, elsewhere = await connect(), await connect()
    await browser.call("session.signIn", {"token": mine})
    await elsewhere.call("session.signIn", {"token": other})

    def ids(tokens: list[dict[str, Any]]) -> dict[str, str]:
        return {t["description"]: t["id"] for t in tokens if "description" in t}

    by_desc = ids(await browser.call("user.getAuthenticationTokens"))
    assert await browser.call("token.set", {"id": by_desc["third"], "description": "renamed"})
    assert "renamed" in ids(await browser.call("user.getAuthenticationTokens"))
    assert await browser.call("token.set", {"id": by_desc["third"], "description": None})
    tokens = await browser.call("user.getAuthenticationTokens")
    assert next(t for t in tokens if t["id"] == by_desc["third"]).get("description") is None
    assert await error_of(browser, "token.set", {"id": "nope", "description": "x"}) == {
        "message": "no such authenticationToken nope",
        "code": 1,
        "data": {"id": "nope", "type": "authenticationToken"},
    }

    # Delete one by the id the page shows: that token's connection closes, not the others.
    assert await browser.call("token.deleteOwn", {"tokens": [by_desc["other"]]}) is True
    assert await closed_within(elsewhere)
    assert (await error_of(await connect(), "session.signIn", {"token": other}))["code"] == 3
    # Sign out everywhere else: every token but the one the browser signed in with.
    assert await browser.call("token.deleteOwn", {"pattern": {"id": {"__not": mine}}}) is True
    left = await browser.call("user.getAuthenticationTokens")
    assert [t["description"] for t in left] == ["browser"]
    assert await browser.call("system.getVersion") == "0.1"
    assert (await error_of(await connect(), "session.signIn", {"token": third}))["code"] == 3


@pytest.mark.timeout(60)
async def test_non_admin_on_real_objects(tmp_path: Path, sim: Simulator) -> None:
    settings = MigrationSettings(retry_delay_s=0.2, cancel_wait_s=10.0)
    async with lab_on(sim, tmp_path, settings) as lab:
        vm = await lab.id_of("VM", "web-01")
        host = await lab.id_of("host", "a2")
        await lab.client.call("user.create", {"email": "op@x.net", "password": "pw"})
        op = await XoClient.connect(lab.server.ws_url)
        lab.clients.append(op)
        await op.sign_in("op@x.net", "pw")

        # Methods with `resolve`: without ACL entries, no right on any object (migration.plan
        # needs `view`, the others `administrate`; tests/server/test_acl.py has the entries).
        for method, permission in (
            ("vm.migrate", "administrate"),
            ("migration.plan", "view"),
            ("migration.start", "administrate"),
        ):
            error = await error_of(op, method, {"vm": vm, "targetHost": host})
            assert error == {
                "message": "not enough permissions",
                "code": 2,
                "data": {"permission": permission, "object": {"id": vm}},
            }, method
        error = await error_of(op, "vm.migrate_pool", {"id": vm, "target_host_id": host})
        assert error["code"] == 2 and error["data"]["permission"] == "administrate"
        # An object a non-admin may not view gets the same refusal whether it exists or not
        # (xo-server answers `no such object` first); an admin is told.
        task = (await lab.client.call("xo.getAllObjects", {"filter": {"type": "task"}})) or {}
        for obj_id in ("nope", vm, *task):
            assert await error_of(op, "task.cancel", {"id": obj_id}) == {
                "message": "not enough permissions",
                "code": 2,
                "data": {"permission": "administrate", "object": {"id": obj_id}},
            }
        assert await error_of(lab.client, "task.cancel", {"id": "nope"}) == {
            "message": "no such task nope",
            "code": 1,
            "data": {"id": "nope", "type": "task"},
        }
        # Nothing moved.
        assert (await lab.get(vm))["$container"] != host

        # A XAPI error that reaches a non-admin. No method a non-admin may call lets a raw
        # XAPI error through (resolve refuses them first; migration.cancel reports XAPI's
        # refusal in its result), so a real one from the simulator goes through the same
        # mapping the dispatcher applies.
        pool = (await lab.get(vm))["$pool"]
        conn = lab.server.state.pools.connection_for_pool(pool)
        with pytest.raises(XapiError) as info:
            await conn.call("VM.get_record", "OpaqueRef:no-such-vm")
        store = lab.server.state.store
        wire = to_wire_error(info.value, is_admin=False, store=store)
        assert orjson.dumps(wire) == b'{"code":-32000,"message":"unknown error from the peer"}'
        seen_by_admin = to_wire_error(info.value, is_admin=True, store=store)
        assert seen_by_admin["code"] == -32000
        assert seen_by_admin["data"]["code"] == "HANDLE_INVALID"
        assert seen_by_admin["message"].startswith("HANDLE_INVALID(")
