"""Reference section 10, items 3, 4, 5 and 12: sign-in, calls before sign-in, tokens, admin."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.helpers import expire_tokens, stored_bytes
from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.xo_client import RpcError, XoClient

ADMIN = {"email": "admin@admin.net", "password": "admin"}
INVALID_CREDENTIALS = {"message": "invalid credentials", "code": 3}


async def test_default_admin_and_sign_in_result(connect) -> None:
    client = await connect()
    response = await client.request("session.signIn", ADMIN)
    user = response["result"]
    assert list(user) == ["id", "email", "groups", "permission", "preferences"]
    assert user["email"] == "admin@admin.net" and user["permission"] == "admin"
    assert user["groups"] == [] and user["preferences"] == {}
    assert await client.call("session.getUser") == user


async def test_default_admin_is_created_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        async with running_server(make_config(tmp_path)):
            pass
    created = [r for r in caplog.records if "default_user_created" in r.getMessage()]
    assert len(created) == 1


async def test_sign_in_forms_and_no_param_validation(connect) -> None:
    client = await connect()
    # {username, password}; unknown keys (otp, anything) are not validated.
    user = await client.call(
        "session.signIn", {"username": "admin@admin.net", "password": "admin", "otp": "1", "x": 2}
    )
    assert user["email"] == "admin@admin.net"
    for bad in (
        {"email": "admin@admin.net", "password": "nope"},
        {"email": "who@x", "password": "a"},
        {},
        [],
    ):
        other = await connect()
        response = await other.request("session.signIn", bad)
        assert response["error"] == INVALID_CREDENTIALS
        assert other.frames[-1].startswith('{"error":{"message":"invalid credentials","code":3}')


async def test_deprecated_sign_in_aliases_are_validated(connect) -> None:
    client = await connect()
    response = await client.request("session.signInWithPassword", {"email": "admin@admin.net"})
    assert response["error"]["code"] == 10
    assert await client.call("session.signInWithPassword", ADMIN)
    token = await client.call("token.create")
    other = await connect()
    assert (await other.call("session.signInWithToken", {"token": token}))["permission"] == "admin"


async def test_calls_before_sign_in(connect) -> None:
    client = await connect()
    response = await client.request("xo.getAllObjects", {"filter": {"type": "VM"}})
    assert response["error"] == {
        "message": "not enough permissions",
        "code": 2,
        "data": {"object": {}},
    }
    response = await client.request("token.delete", {"tokens": ["x"]})
    assert response["error"]["data"] == {"permission": "admin", "object": {}}
    assert client.frames[-1].startswith(
        '{"error":{"message":"not enough permissions","code":2,"data":{"permission":"admin","object":{}}}'
    )
    # Unknown methods are reported before any auth check.
    response = await client.request("vm.doesNotExist")
    assert response["error"] == {
        "code": -32601,
        "data": "vm.doesNotExist",
        "message": "method not found: vm.doesNotExist",
    }
    for public in ("system.getMethodsInfo", "system.getVersion", "system.listMethods"):
        assert "result" in await client.request(public)
    # session.getUser before sign-in: a plain error in xo-server, hidden from non-admins.
    response = await client.request("session.getUser")
    assert response["error"] == {"code": -32000, "message": "unknown error from the peer"}
    response = await client.request("session.signOut")
    assert response["error"]["code"] == 2


async def test_xo_cli_register_flow_and_token_reuse(connect) -> None:
    client = await connect()
    await client.sign_in()
    params = {"client": {"id": "jhvq8snuax"}, "description": "xo-cli@0.32.3 - vm - Linux x86_64"}
    token = await client.call("token.create", params)
    assert isinstance(token, str) and len(token) == 43
    assert await client.call("token.create", params) == token  # same client.id: same token
    assert await client.call("token.create", {"client": {"id": "other"}}) != token
    assert await client.call("token.create", {"expiresIn": "1 hour"}) != token
    assert isinstance(await client.call("token.create", {"expiresIn": 3_600_000}), str)
    await client.close()
    # Every later xo-cli command: open, sign in with {token}, call.
    cli = await connect()
    user = await cli.call("session.signIn", {"token": token})
    assert user["email"] == "admin@admin.net"
    assert await cli.call("xo.getAllObjects", {"filter": {"type": "VM"}}) == {}


async def test_token_create_validation(connect) -> None:
    client = await connect(signed_in=True)
    for params, path in (
        ({"client": {"id": ""}}, "/client/id"),
        ({"client": {"id": "a", "extra": 1}}, "/client"),
        ({"expiresIn": True}, "/expiresIn"),
        ({"description": 3}, "/description"),
    ):
        response = await client.request("token.create", params)
        assert response["error"]["code"] == 10
        assert response["error"]["data"]["errors"][0]["instancePath"] == path
    for expires in (1000, "10 s", "2 years", "soon"):
        response = await client.request("token.create", {"expiresIn": expires})
        # Plain errors: an admin sees the message, with code -32000.
        assert response["error"]["code"] == -32000
        assert "expiresIn duration" in response["error"]["message"]


async def test_token_survives_restart_and_deleted_token_is_refused(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as srv:
        client = await XoClient.connect(srv.ws_url)
        await client.sign_in()
        token = await client.call("token.create", {"client": {"id": "c1"}})
        doomed = await client.call("token.create", {"description": "to delete"})
        await client.close()
    db_text = await stored_bytes(tmp_path)
    assert token.encode() not in db_text and doomed.encode() not in db_text  # hashes only
    async with running_server(make_config(tmp_path)) as srv:
        client = await XoClient.connect(srv.ws_url)
        assert (await client.call("session.signIn", {"token": token}))["email"] == "admin@admin.net"
        assert await client.call("token.create", {"client": {"id": "c1"}}) == token
        assert await client.call("token.delete", {"tokens": [doomed]}) is True
        other = await XoClient.connect(srv.ws_url)
        response = await other.request("session.signIn", {"token": doomed})
        assert response["error"] == INVALID_CREDENTIALS
        assert await client.call("token.deleteOwn", {"pattern": {"client": {"id": "c1"}}}) is True
        response = await other.request("session.signIn", {"token": token})
        assert response["error"] == INVALID_CREDENTIALS
        await client.close()
        await other.close()


async def test_expired_token_refused_and_connection_closed_silently(
    server: RunningServer, connect
) -> None:
    client = await connect(signed_in=True)
    expired = await client.call("token.create", {"description": "expired"})
    short = await client.call("token.create", {"description": "short"})
    await expire_tokens(server.state, time.time() - 1, "expired")
    await expire_tokens(server.state, time.time() + 0.4, "short")
    other = await connect()
    assert (await other.request("session.signIn", {"token": expired}))[
        "error"
    ] == INVALID_CREDENTIALS
    assert (await other.call("session.signIn", {"token": short}))["permission"] == "admin"
    assert await other.call("system.getVersion") == "0.1"
    await asyncio.sleep(0.5)
    frames_before = len(other.frames)
    with pytest.raises(ConnectionError):
        await other.call("system.getVersion")
    await asyncio.wait_for(other.closed.wait(), 5)
    assert len(other.frames) == frames_before  # no reply to the request after expiry


async def test_failed_sign_ins_are_throttled_per_user_only(server: RunningServer, connect) -> None:
    await server.state.auth.add_user("bob@x.net", "bob-pw", "user")
    client = await connect()
    wrong = {"email": "bob@x.net", "password": "wrong"}
    assert (await client.request("session.signIn", wrong))["error"]["code"] == 3
    # Same user again at once: refused without checking (a plain error for anonymous callers).
    response = await client.request("session.signIn", {"email": "bob@x.net", "password": "bob-pw"})
    assert response["error"] == {"code": -32000, "message": "unknown error from the peer"}
    # Someone else is not slowed down.
    started = time.monotonic()
    assert (await client.call("session.signIn", ADMIN))["email"] == "admin@admin.net"
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.35)  # the test config's throttling delay is 0.3 s
    assert (await client.call("session.signIn", {"email": "bob@x.net", "password": "bob-pw"}))[
        "permission"
    ] == "user"


async def test_sign_out_returns_true_and_requires_sign_in_again(connect) -> None:
    client = await connect(signed_in=True)
    assert await client.call("session.signOut") is True
    with pytest.raises(RpcError) as info:
        await client.call("xo.getAllObjects")
    assert info.value.code == 2


async def test_empty_password_is_a_plain_error(connect) -> None:
    client = await connect()
    response = await client.request("session.signIn", {"email": "admin@admin.net", "password": ""})
    assert response["error"] == {"code": -32000, "message": "unknown error from the peer"}
