"""Reference section 10, items 9, 10 and 12 (push side): `all` notifications and the snapshot.

Changes are fed by writing to the ObjectStore the server uses: that is the live collection the
pool connections fill in production."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiohttp
import orjson
import pytest

from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.xo_client import XoClient


def vm(obj_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": obj_id,
        "type": "VM",
        "uuid": obj_id,
        "$pool": "p1",
        "$poolId": "p1",
        "_xapiRef": f"OpaqueRef:{obj_id}",
        "power_state": "Running",
        **extra,
    }


async def test_enter_and_exit_notifications_after_sign_in(server: RunningServer, connect) -> None:
    store = server.state.store
    anonymous = await connect()
    client = await connect(signed_in=True)
    store.set(vm("a"))
    store.set(vm("b", power_state="Halted"))
    message = await client.next_notification()
    assert message == {
        "jsonrpc": "2.0",
        "method": "all",
        "params": {"type": "enter", "items": {"a": vm("a"), "b": vm("b", power_state="Halted")}},
    }
    assert client.frames[-1].startswith('{"jsonrpc":"2.0","method":"all","params":{"type":"enter"')
    store.set(vm("a", power_state="Halted"))  # updates are full objects under "enter"
    store.remove("b")
    message = await client.next_notification()
    assert message["params"] == {"type": "enter", "items": {"a": vm("a", power_state="Halted")}}
    message = await client.next_notification()
    assert message["params"] == {"type": "exit", "items": {"b": 0}}
    await asyncio.sleep(0.05)
    assert anonymous.notifications.empty()  # nothing before sign-in


async def test_notifications_stop_after_sign_out(server: RunningServer, connect) -> None:
    client = await connect(signed_in=True)
    watcher = await connect(signed_in=True)
    assert await client.call("session.signOut") is True
    server.state.store.set(vm("c"))
    await watcher.next_notification()
    await asyncio.sleep(0.05)
    assert client.notifications.empty()


async def test_get_all_objects_filters_and_limit(server: RunningServer, connect) -> None:
    store = server.state.store
    for i in range(5):
        store.set(vm(f"vm{i}", power_state="Running" if i % 2 else "Halted"))
    store.set(
        {"id": "h1", "type": "host", "$pool": "p1", "_xapiRef": "OpaqueRef:h1", "tags": ["a", "b"]}
    )
    client = await connect(signed_in=True)
    everything = await client.call("xo.getAllObjects")
    assert set(everything) == {"vm0", "vm1", "vm2", "vm3", "vm4", "h1"}
    assert everything["vm0"] == vm("vm0", power_state="Halted")
    vms = await client.call("xo.getAllObjects", {"filter": {"type": "VM"}})
    assert set(vms) == {f"vm{i}" for i in range(5)}
    running = await client.call(
        "xo.getAllObjects", {"filter": {"type": "VM", "power_state": "Running"}}
    )
    assert set(running) == {"vm1", "vm3"}
    assert len(await client.call("xo.getAllObjects", {"filter": {"type": "VM"}, "limit": 2})) == 2
    assert set(await client.call("xo.getAllObjects", {"filter": {"tags": ["b"]}})) == {"h1"}
    assert set(await client.call("xo.getAllObjects", {"filter": "type:host"})) == {"h1"}
    assert set(await client.call("xo.getAllObjects", {"filter": "type:VM power_state:Halted"})) == {
        "vm0",
        "vm2",
        "vm4",
    }


async def test_get_all_objects_ndjson_one_shot_url(server: RunningServer, connect) -> None:
    server.state.store.set(vm("n1"))
    server.state.store.set(vm("n2"))
    client = await connect(signed_in=True)
    result = await client.call("xo.getAllObjects", {"ndjson": True, "filter": {"type": "VM"}})
    assert list(result) == ["$getFrom"] and result["$getFrom"].startswith("/api/")
    async with aiohttp.ClientSession() as http:
        url = f"{server.base}{result['$getFrom']}"  # resolved against the /api/ URL
        async with http.get(url) as resp:
            assert resp.status == 200
            lines = (await resp.read()).splitlines()
        assert sorted(orjson.loads(line)["id"] for line in lines) == ["n1", "n2"]
        async with http.get(url) as resp:
            assert resp.status == 404  # one shot


async def test_task_objects_enter_while_running_and_exit_when_done(
    server: RunningServer, connect
) -> None:
    """Item 10's transport side: XAPI task objects are pushed like any other object."""
    client = await connect(signed_in=True)
    task = {
        "type": "task",
        "id": "t1",
        "uuid": "t1",
        "name_label": "Async.VM.pool_migrate",
        "progress": 0.0,
        "status": "pending",
        "created": 1700000000,
        "finished": None,
        "$host": "h1",
        "$pool": "p1",
        "$poolId": "p1",
        "_xapiRef": "OpaqueRef:t1",
    }
    store = server.state.store
    store.set(task)
    seen = [(await client.next_notification())["params"]]
    for progress in (0.25, 0.5, 1.0):
        await asyncio.sleep(0)
        store.set({**task, "progress": progress})
        seen.append((await client.next_notification())["params"])
    store.remove("t1")
    seen.append((await client.next_notification())["params"])
    assert [p["items"]["t1"]["progress"] for p in seen[:-1]] == [0.0, 0.25, 0.5, 1.0]
    assert seen[-1] == {"type": "exit", "items": {"t1": 0}}


@pytest.mark.timeout(60)
async def test_many_signed_in_clients_all_receive_every_change(
    server: RunningServer, connect
) -> None:
    clients = [await connect() for _ in range(40)]
    token = await clients[0].call(
        "session.signIn", {"email": "admin@admin.net", "password": "admin"}
    )
    token = await clients[0].call("token.create")
    await asyncio.gather(*(c.call("session.signIn", {"token": token}) for c in clients[1:]))
    store = server.state.store
    final: dict[str, Any] = {}
    for round_no in range(20):
        for i in range(10):
            obj = vm(f"vm{i}", round=round_no)
            store.set(obj)
            final[obj["id"]] = obj
        if round_no % 5 == 4:
            store.remove(f"vm{round_no % 10}")
            final.pop(f"vm{round_no % 10}")
        await asyncio.sleep(0)  # one flush per round

    async def replay(client: XoClient) -> dict[str, Any]:
        objects: dict[str, Any] = {}
        while True:
            try:
                message = await client.next_notification(timeout=1.0)
            except TimeoutError:
                return objects
            items = message["params"]["items"]
            if message["params"]["type"] == "exit":
                for obj_id in items:
                    objects.pop(obj_id, None)
            else:
                objects.update(items)

    views = await asyncio.gather(*(replay(c) for c in clients))
    for view in views:
        assert view == final


@pytest.mark.timeout(60)
async def test_a_stalled_reader_is_dropped_without_stalling_others(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    # One flush per round (no batching window): the outbox's own limits are under test.
    config = make_config(
        tmp_path, push_max_frames=4, push_max_objects=2000, push_min_interval_s=0.0
    )
    async with running_server(config) as srv:
        good = await XoClient.connect(srv.ws_url)
        await good.sign_in()
        token = await good.call("token.create")
        # A raw socket that signs in and then never reads again.
        stalled = socket.socket()
        stalled.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )  # before connect: small window
        stalled.connect(("127.0.0.1", srv.port))
        stalled.sendall(
            b"GET /api/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        payload = orjson.dumps(
            {"id": 1, "jsonrpc": "2.0", "method": "session.signIn", "params": {"token": token}}
        )
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + b"\0\0\0\0"
        stalled.sendall(header + payload)  # masked with a zero key: payload unchanged
        for _ in range(500):  # until the raw client's sign-in went through
            if len(srv.state.push) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(srv.state.push) == 2
        store = srv.state.store
        big = "x" * 8000
        received: set[str] = set()

        def drain() -> None:
            while not good.notifications.empty():
                received.update(good.notifications.get_nowait()["params"]["items"])

        for round_no in range(150):
            for i in range(20):
                store.set(vm(f"r{round_no}-{i}", blob=big))
            await asyncio.sleep(0)
            drain()
        # The healthy client got every object promptly (flushes may batch several rounds)...
        while len(received) < 3000:
            received.update((await good.next_notification(timeout=5))["params"]["items"])
        # ...and the stalled one was disconnected once its coalesced backlog passed the limit.
        for _ in range(200):
            if len(srv.state.push) == 1:
                break
            await asyncio.sleep(0.02)
        assert len(srv.state.push) == 1
        assert srv.state.push.dropped == 1  # what /metrics reports as xo_migrate_push_drops
        assert any("push_overflow" in r.getMessage() for r in caplog.records)
        assert await good.call("system.getVersion") == "0.1"
        with contextlib.suppress(OSError):
            stalled.close()
        await good.close()
