"""The /rest/v0 API over real HTTP (aiohttp ClientSession), against the simulated lab: auth,
listings, the VM migrate action (async and sync), migrations as XO tasks, abort and watch."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from server.migrations.service import MigrationSettings
from server.rest import REST
from tests.helpers import admin_token, wait_until
from tests.migrations.conftest import Lab, lab_on
from tests.server.conftest import RunningServer
from xen.sim import Simulator

pytestmark = pytest.mark.timeout(90)
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.fixture(name="lab")
async def lab_fixture(tmp_path: Path, sim: Simulator) -> AsyncIterator[Lab]:
    """The server connected to both simulated pools (as tests/migrations' `lab`)."""
    settings = MigrationSettings(retry_delay_s=0.2, cancel_wait_s=10.0)
    async with lab_on(sim, tmp_path, settings) as running:
        yield running


def _basic(email: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()


async def _token(srv: RunningServer) -> str:
    state = srv.state
    return await admin_token(state)


@contextlib.asynccontextmanager
async def rest_session(srv: RunningServer, **headers: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that authenticates as xo-cli does: `cookie: authenticationToken=<token>`."""
    if not headers:
        headers = {"Cookie": f"authenticationToken={await _token(srv)}"}
    async with aiohttp.ClientSession(
        srv.base, headers=headers, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session


async def _json(resp: aiohttp.ClientResponse) -> Any:
    assert resp.content_type in ("application/json", "application/x-ndjson"), resp.content_type
    return orjson.loads(await resp.read())


async def _status_and_json(
    session: aiohttp.ClientSession, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with session.request(method, path, **kw) as resp:
        return resp.status, (await _json(resp) if resp.status != 204 else None)


async def _migrate(
    session: aiohttp.ClientSession, vm: str, body: dict[str, Any], sync: bool = False
) -> tuple[int, Any, Mapping[str, str]]:
    path = f"/rest/v0/vms/{vm}/actions/migrate" + ("?sync=true" if sync else "")
    async with session.post(path, json=body) as resp:
        payload = await _json(resp) if resp.status != 204 else None
        return resp.status, payload, resp.headers


async def _task(session: aiohttp.ClientSession, task_id: str, wait: bool = False) -> Any:
    status, task = await _status_and_json(
        session, "GET", f"/rest/v0/tasks/{task_id}" + ("?wait=true" if wait else "")
    )
    assert status == 200, task
    return task


# -- authentication --------------------------------------------------------------------------


async def test_every_way_of_authenticating_and_the_refusals(server: RunningServer) -> None:
    token = await _token(server)
    accepted = [
        {"Cookie": f"authenticationToken={token}"},
        {"Cookie": f"token={token}"},
        {"Authorization": f"Bearer {token}"},
        {"Authorization": _basic("admin@admin.net", "admin")},
    ]
    for headers in accepted:
        async with rest_session(server, **headers) as s:
            status, body = await _status_and_json(s, "GET", "/rest/v0")
            assert status == 200, (headers, body)
            assert body == ["/rest/v0/vms", "/rest/v0/hosts", "/rest/v0/pools", "/rest/v0/tasks"]

    async with aiohttp.ClientSession(server.base) as anonymous:
        status, body = await _status_and_json(anonymous, "GET", "/rest/v0/vms")
        assert (
            status == 401 and body["code"] == 8 and "authenticationToken" in body["data"]["reason"]
        )
        for headers in (
            {"Cookie": "authenticationToken=not-a-token"},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": _basic("admin@admin.net", "wrong")},
            {"Authorization": "Basic !!!"},
        ):
            status, body = await _status_and_json(anonymous, "GET", "/rest/v0/vms", headers=headers)
            assert status == 401 and body["code"] == 3, (headers, body)

    # A non-admin signs in too, and sees what its ACLs let it view: here nothing. An object
    # it may not view is refused whether it exists or not (tests/server/test_acl.py).
    await server.state.auth.add_user("viewer@example.net", "secret", "none")
    async with rest_session(server, Authorization=_basic("viewer@example.net", "secret")) as s:
        status, body = await _status_and_json(s, "GET", "/rest/v0/vms")
        assert status == 200 and body == []
        status, body = await _status_and_json(s, "GET", "/rest/v0/vms/nope")
        assert status == 403 and body == {
            "message": "not enough permissions",
            "code": 2,
            "data": {"permission": "view", "object": {"id": "nope"}},
        }

    async with rest_session(server) as s:
        status, body = await _status_and_json(s, "GET", "/rest/v0/nothing/here")
        assert status == 404 and body["code"] == 1


# -- listings --------------------------------------------------------------------------------


async def test_listings_are_hrefs_or_the_fields_asked_for(lab: Lab) -> None:
    vms = await lab.objects(type="VM")
    async with rest_session(lab.server) as s:
        status, hrefs = await _status_and_json(s, "GET", "/rest/v0/vms")
        assert status == 200
        assert sorted(hrefs) == sorted(f"/rest/v0/vms/{vm_id}" for vm_id in vms)

        status, items = await _status_and_json(
            s, "GET", "/rest/v0/vms", params={"fields": "name_label,power_state"}
        )
        assert status == 200 and len(items) == len(vms)
        for item in items:
            vm_id = item["href"].rsplit("/", 1)[1]
            assert item == {
                "name_label": vms[vm_id]["name_label"],
                "power_state": vms[vm_id]["power_state"],
                "href": f"/rest/v0/vms/{vm_id}",
            }

        status, items = await _status_and_json(
            s, "GET", "/rest/v0/vms", params={"fields": "name_label", "filter": "name_label:web-0*"}
        )
        assert sorted(i["name_label"] for i in items) == ["web-01", "web-02"]
        status, items = await _status_and_json(s, "GET", "/rest/v0/vms", params={"limit": "3"})
        assert status == 200 and len(items) == 3
        status, body = await _status_and_json(s, "GET", "/rest/v0/vms", params={"limit": "-1"})
        assert status == 400 and body["code"] == 10

        async with s.get("/rest/v0/hosts", params={"fields": "name_label", "ndjson": "true"}) as r:
            assert r.content_type == "application/x-ndjson"
            lines = [orjson.loads(line) for line in (await r.read()).splitlines()]
        assert sorted(h["name_label"] for h in lines) == ["a1", "a2", "a3", "b1", "b2"]
        status, pools = await _status_and_json(s, "GET", "/rest/v0/pools")
        assert len(pools) == 2

        web01 = await lab.id_of("VM", "web-01")
        status, vm = await _status_and_json(s, "GET", f"/rest/v0/vms/{web01}")
        assert status == 200 and vm["name_label"] == "web-01" and vm["type"] == "VM"
        a1 = await lab.id_of("host", "a1")
        status, body = await _status_and_json(s, "GET", f"/rest/v0/vms/{a1}")  # a host, not a VM
        assert status == 404 and body == {
            "message": f"no such VM {a1}",
            "code": 1,
            "data": {"id": a1, "type": "VM"},
        }
        status, host = await _status_and_json(s, "GET", f"/rest/v0/hosts/{a1}")
        assert status == 200 and host["name_label"] == "a1"


# -- migrate ---------------------------------------------------------------------------------


async def test_async_migrate_answers_202_and_the_task_says_when_the_vm_moved(lab: Lab) -> None:
    vm = await lab.id_of("VM", "web-01")
    a2 = await lab.id_of("host", "a2")
    admin = await lab.server.state.storage.user_by_email("admin@admin.net")
    assert admin is not None
    async with rest_session(lab.server) as s:
        status, body, headers = await _migrate(s, vm, {"hostId": a2})
        assert status == 202, body
        task_id = body["taskId"]
        assert body == {"taskId": task_id}
        assert headers["Location"] == f"/rest/v0/tasks/{task_id}"

        async with s.get(headers["Location"], params={"wait": "true"}) as resp:
            assert resp.status == 200
            task = await _json(resp)
        assert task["id"] == task_id and task["status"] == "success"
        assert task["properties"]["name"] == "REST API: Migrate VM"
        assert task["properties"]["type"] == "xo:rest-api:action"
        assert task["properties"]["objectId"] == vm
        assert task["properties"]["userId"] == admin.id
        assert task["properties"]["progress"] == 100
        assert task["properties"]["migrationStatus"] == "success"
        assert task["end"] >= task["start"] > 1e12  # milliseconds, as xo-server
        assert "result" not in task

        status, moved = await _status_and_json(s, "GET", f"/rest/v0/vms/{vm}")
        assert moved["$container"] == a2

        status, hrefs = await _status_and_json(s, "GET", "/rest/v0/tasks")
        assert f"/rest/v0/tasks/{task_id}" in hrefs
        status, tasks = await _status_and_json(
            s, "GET", "/rest/v0/tasks", params={"fields": "status", "filter": "status:success"}
        )
        assert {"status": "success", "href": f"/rest/v0/tasks/{task_id}"} in tasks

        # Nothing left to abort: a clear refusal, and the task is unchanged.
        status, body = await _status_and_json(s, "POST", f"/rest/v0/tasks/{task_id}/actions/abort")
        assert status == 409 and body["code"] == 5 and body["data"]["status"] == "success"
        assert "abortionRequestedAt" not in await _task(s, task_id)
        status, body = await _status_and_json(s, "GET", "/rest/v0/tasks/not-a-task")
        assert status == 404 and body["code"] == 1


async def test_sync_migrate_waits_and_bad_requests_start_nothing(lab: Lab) -> None:
    vm = await lab.id_of("VM", "app-01")
    b1 = await lab.id_of("host", "b1")
    pool_b = (await lab.get(b1))["$pool"]
    async with rest_session(lab.server) as s:
        status, body, _ = await _migrate(s, vm, {"hostId": b1, "extra": 1})
        assert status == 400 and body["code"] == 10
        assert [(e["loc"], e["type"]) for e in body["data"]["errors"]] == [
            (["extra"], "extra_forbidden")
        ]
        status, body, _ = await _migrate(s, vm, {})
        assert status == 400 and body["data"]["errors"][0]["loc"] == ["hostId"]
        async with s.post(
            f"/rest/v0/vms/{vm}/actions/migrate", data=b"{not json", headers=JSON_TYPE
        ) as resp:
            assert resp.status == 400 and (await _json(resp))["code"] == 10
        status, body, _ = await _migrate(s, vm, {"hostId": "no-such-host"})
        assert status == 404 and body["message"] == "no such host no-such-host"
        status, body, _ = await _migrate(s, "no-such-vm", {"hostId": b1})
        assert status == 404 and body["message"] == "no such VM no-such-vm"
        assert await lab.client.call("migration.getAll") == []  # nothing was started

        status, body, headers = await _migrate(s, vm, {"hostId": b1}, sync=True)
        assert status == 204, body
        task_id = headers["Location"].rsplit("/", 1)[1]
        assert (await _task(s, task_id))["status"] == "success"
        status, moved = await _status_and_json(s, "GET", f"/rest/v0/vms/{vm}")
        assert moved["$container"] == b1 and moved["$pool"] == pool_b


async def test_a_halted_vm_fails_with_the_xapi_code(lab: Lab) -> None:
    a2 = await lab.id_of("host", "a2")
    async with rest_session(lab.server) as s:
        vm = await lab.id_of("VM", "halted-01")
        status, body, _ = await _migrate(s, vm, {"hostId": a2})
        assert status == 202
        task = await _task(s, body["taskId"], wait=True)
        assert task["status"] == "failure"
        assert task["properties"]["migrationStatus"] == "failure"
        assert task["result"]["code"] == "VM_BAD_POWER_STATE"
        assert task["result"]["hint"]  # what to do about it
        assert task["end"] >= task["start"]

        other = await lab.id_of("VM", "halted-02")
        status, body, _ = await _migrate(s, other, {"hostId": a2}, sync=True)
        assert status == 409
        assert body["code"] == 13 and body["data"]["actual"] == "halted"
        assert (await _task(s, body["taskId"]))["result"]["code"] == "VM_BAD_POWER_STATE"


# -- abort -----------------------------------------------------------------------------------


async def test_abort_a_queued_migration(lab: Lab) -> None:
    lab.server.state.services["migrations"].queue.per_pool = 1
    lab.sim.timing.time_scale = 0.01  # the first is still running when the second is aborted
    b1 = await lab.id_of("host", "b1")
    async with rest_session(lab.server) as s:
        _, first, _ = await _migrate(s, await lab.id_of("VM", "web-01"), {"hostId": b1})
        vm2 = await lab.id_of("VM", "web-02")
        _, second, _ = await _migrate(s, vm2, {"hostId": b1})
        queued = await _task(s, second["taskId"])
        assert queued["status"] == "pending"
        assert queued["properties"]["migrationStatus"] == "queued"
        assert queued["properties"]["queuePosition"] == 1

        async with s.post(f"/rest/v0/tasks/{second['taskId']}/actions/abort") as resp:
            assert resp.status == 204
        aborted = await _task(s, second["taskId"])
        assert aborted["status"] == "failure"
        assert aborted["properties"]["migrationStatus"] == "cancelled"
        assert aborted["result"]["code"] == "TASK_CANCELLED"
        assert aborted["abortionRequestedAt"] >= aborted["start"]
        assert (await _task(s, first["taskId"], wait=True))["status"] == "success"
        _, vm = await _status_and_json(s, "GET", f"/rest/v0/vms/{vm2}")
        assert vm["$pool"] != (await lab.get(b1))["$pool"]  # never moved


async def test_abort_a_running_migration(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.01
    vm = await lab.id_of("VM", "db-01")  # the longest cross-pool migration: seconds
    b1 = await lab.id_of("host", "b1")
    async with rest_session(lab.server) as s:
        _, body, _ = await _migrate(s, vm, {"hostId": b1})
        task_id = body["taskId"]

        async def moving() -> bool:
            task = await _task(s, task_id)
            record = await lab.client.call("migration.get", {"id": task_id})
            return task["properties"]["phase"] == "disks" and bool(record["xapiTask"])

        await wait_until(moving, timeout=30)
        async with s.post(f"/rest/v0/tasks/{task_id}/actions/abort") as resp:
            assert resp.status == 204
        task = await _task(s, task_id, wait=True)
        assert task["status"] == "failure" and task["result"]["code"] == "TASK_CANCELLED"
        assert 0 < task["properties"]["progress"] < 100
        _, moved = await _status_and_json(s, "GET", f"/rest/v0/vms/{vm}")
        assert moved["$pool"] != (await lab.get(b1))["$pool"]


# -- watch -----------------------------------------------------------------------------------


async def test_watch_streams_task_updates_and_ends_when_the_client_leaves(lab: Lab) -> None:
    lab.sim.timing.time_scale = 0.005
    rest = lab.server.app[REST]
    vm = await lab.id_of("VM", "app-02")
    b1 = await lab.id_of("host", "b1")
    async with rest_session(lab.server) as s:
        status, body = await _status_and_json(s, "GET", "/rest/v0/tasks", params={"watch": "true"})
        assert status == 400 and "ndjson" in body["message"]

    subscribers_before = len(lab.server.state.store._subscribers)
    async with rest_session(lab.server) as watcher, rest_session(lab.server) as s:
        resp = await watcher.get(
            "/rest/v0/tasks", params={"ndjson": "true", "watch": "true", "fields": "*"}
        )
        assert resp.status == 200 and resp.content_type == "application/x-ndjson"
        await wait_until(lambda: _true(rest.open_streams == 1))
        _, body, _ = await _migrate(s, vm, {"hostId": b1})
        task_id = body["taskId"]

        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while not seen or seen[-1]["status"] == "pending":
                kind, task = orjson.loads(await resp.content.readline())
                assert kind == "update" and task["id"] == task_id
                assert task["href"] == f"/rest/v0/tasks/{task_id}"
                seen.append(task)
        assert seen[0]["status"] == "pending" and seen[-1]["status"] == "success"
        progress = [t["properties"]["progress"] for t in seen]
        assert progress == sorted(progress) and progress[-1] == 100
        assert {t["properties"]["migrationStatus"] for t in seen} >= {"running", "success"}

        resp.close()  # the client goes away: the server must stop streaming to it
        await wait_until(lambda: _true(rest.open_streams == 0), timeout=5)
        assert len(lab.server.state.store._subscribers) == subscribers_before


async def _true(value: bool) -> bool:
    return value
