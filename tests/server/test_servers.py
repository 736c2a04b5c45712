"""server.*: pools added at run time, persisted, connected through the pool layer, end to end
against the XAPI simulator (tests/conftest.py `sim` fixture)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.helpers import wait_until
from tests.server.conftest import make_config, running_server
from tests.server.xo_client import XoClient


async def status_of(client: XoClient, server_id: str) -> dict[str, Any]:
    servers = await client.call("server.getAll")
    return next(s for s in servers if s["id"] == server_id)


@pytest.mark.timeout(90)
async def test_add_connect_push_disable_enable_remove_and_persist(
    tmp_path: Path, manifest: dict[str, Any]
) -> None:
    pool = manifest["pools"][0]
    async with running_server(make_config(tmp_path)) as srv:
        client = await XoClient.connect(srv.ws_url)
        await client.sign_in()
        watchers = [await XoClient.connect(srv.ws_url) for _ in range(10)]
        token = await client.call("token.create")
        for w in watchers:
            await w.call("session.signIn", {"token": token})
        watcher = watchers[0]
        server_id = await client.call(
            "server.add",
            {
                "label": pool["name"],
                "host": pool["master"],
                "username": pool["username"],
                "password": pool["password"],
                "allowUnauthorized": True,
            },
        )
        assert isinstance(server_id, str)

        async def connected() -> dict[str, Any] | None:
            entry = await status_of(client, server_id)
            return entry if entry["status"] == "connected" else None

        entry = await wait_until(connected)
        assert entry["poolId"] == pool["uuid"]
        assert entry["label"] == pool["name"] and entry["enabled"] is True
        assert "password" not in entry
        vms = await client.call("xo.getAllObjects", {"filter": {"type": "VM"}})
        assert vms and all(v["$pool"] == pool["uuid"] for v in vms.values())
        # The initial sync reached the watcher as `all` enter notifications.
        seen: set[str] = set()
        while not set(vms) <= seen:
            message = await watcher.next_notification(timeout=10)
            if message["params"]["type"] == "enter":
                seen.update(message["params"]["items"])

        # A change made in the simulator, through XAPI, reaches signed-in clients.
        vm_id = next(iter(vms))
        session = XenAPI.Session(pool["master"])
        await asyncio.to_thread(
            session.xenapi.login_with_password, pool["username"], pool["password"]
        )
        ref = await asyncio.to_thread(session.xenapi.VM.get_by_uuid, vm_id)
        await asyncio.to_thread(session.xenapi.VM.set_name_label, ref, "renamed by test")
        for w in watchers:  # every signed-in client gets the change
            while True:
                message = await w.next_notification(timeout=10)
                item = message["params"]["items"].get(vm_id)
                if (
                    message["params"]["type"] == "enter"
                    and item
                    and item["name_label"] == "renamed by test"
                ):
                    break
        await asyncio.to_thread(session.xenapi.session.logout)

        assert await client.call("server.disable", {"id": server_id}) is True
        entry = await status_of(client, server_id)
        assert entry["enabled"] is False and entry["status"] == "disconnected"
        await wait_until(lambda: _no_vms(client))
        assert await client.call("server.enable", {"id": server_id}) is True
        await wait_until(connected)
        await client.close()
        for w in watchers:
            await w.close()

    # Persisted: after a restart the pool is still configured and reconnects.
    async with running_server(make_config(tmp_path)) as srv:
        client = await XoClient.connect(srv.ws_url)
        await client.sign_in()
        await wait_until(connected)
        assert await client.call("server.remove", {"id": server_id}) is True
        assert await client.call("server.getAll") == []
        response = await client.request("server.remove", {"id": server_id})
        assert response["error"]["code"] == 1
        assert response["error"]["message"] == f"no such xenServer {server_id}"
        await client.close()


async def _no_vms(client: XoClient) -> bool:
    return await client.call("xo.getAllObjects", {"filter": {"type": "VM"}}) == {}


@pytest.mark.timeout(60)
async def test_wrong_credentials_show_in_status(tmp_path: Path, manifest: dict[str, Any]) -> None:
    pool = manifest["pools"][1]
    async with running_server(make_config(tmp_path)) as srv:
        client = await XoClient.connect(srv.ws_url)
        await client.sign_in()
        server_id = await client.call(
            "server.add",
            {"host": pool["master"], "username": pool["username"], "password": "wrong"},
        )

        async def failed() -> dict[str, Any] | None:
            entry = await status_of(client, server_id)
            return entry if entry.get("error") else None

        entry = await wait_until(failed)
        assert entry["status"] != "connected"
        assert "SESSION_AUTHENTICATION_FAILED" in str(entry["error"])
        await client.close()


async def test_server_methods_validate_and_require_admin(server, connect) -> None:
    await server.state.auth.add_user("op@x.net", "pw", "user")
    admin = await connect(signed_in=True)
    response = await admin.request("server.add", {"host": "h", "username": "root"})
    assert (
        response["error"]["data"]["errors"][0]["message"]
        == "must have required property 'password'"
    )
    response = await admin.request("server.enable", {"id": "unknown"})
    assert response["error"]["message"] == "no such xenServer unknown"
    user = await connect()
    await user.sign_in("op@x.net", "pw")
    response = await user.request("server.add", {"host": "h", "username": "root", "password": "x"})
    assert response["error"]["data"] == {"permission": "admin", "object": {}}
