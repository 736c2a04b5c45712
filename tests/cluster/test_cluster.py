"""Issue 15: several xo-migrate instances on one Redis, over real sockets. A migration is
watched from another instance with monotonic progress and survives the SIGKILL of the
instance running it; the queue's limits hold across instances; tokens and their revocation
work across instances."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.cluster.conftest import LEASE_TTL_S, ids_by_name
from tests.helpers import wait_until
from tests.server.xo_client import XoClient
from xen.sim import Simulator

pytestmark = pytest.mark.timeout(180)


async def migration_objects(client: XoClient, seen: dict[str, list[dict[str, Any]]]) -> None:
    """Collect every `migration` object pushed to `client`, in order, per id."""
    while True:
        message = await client.next_notification(timeout=120)
        if message["params"]["type"] != "enter":
            continue
        for obj in message["params"]["items"].values():
            if obj.get("type") == "migration":
                seen.setdefault(obj["id"], []).append(obj)


async def test_a_migration_survives_the_death_of_its_instance(
    sim: Simulator, redis: str, instances: Any
) -> None:
    sim.timing.time_scale = 0.05  # db-01 cross-pool: several seconds
    first, second = await instances(2)
    starter, watcher = await first.client(), await second.client()
    ids = await ids_by_name(starter)
    seen: dict[str, list[dict[str, Any]]] = {}
    watching = asyncio.create_task(migration_objects(watcher, seen))
    try:
        migration_id = await starter.call(
            "migration.start", {"vm": ids["db-01"], "targetHost": ids["b1"]}
        )

        async def moving() -> bool:
            history = seen.get(migration_id, [])
            return bool(history) and history[-1]["progress"] >= 0.2

        await wait_until(moving, timeout=60)
        store = aioredis.Redis.from_url(redis, decode_responses=True)
        lease = f"xom:lease:{migration_id}"
        owner = await store.get(lease)
        assert owner is not None
        first.kill()
        killed = time.monotonic()

        async def taken_over() -> str | None:
            now = await store.get(lease)
            return now if now is not None and now != owner else None

        await wait_until(taken_over, timeout=LEASE_TTL_S * 3, interval=0.05)
        adoption_s = time.monotonic() - killed
        await store.aclose()
        assert adoption_s < LEASE_TTL_S + 1.5, adoption_s
        # migration.wait on the surviving instance returns with the end.
        final = await watcher.call("migration.wait", {"id": migration_id}, timeout=120)
        assert final["status"] == "success", final

        async def pushed_end() -> bool:
            return seen[migration_id][-1]["status"] == "success"

        await wait_until(pushed_end, timeout=10)
    finally:
        watching.cancel()
    progress = [o["progress"] for o in seen[migration_id]]
    assert progress == sorted(progress), progress  # never backwards, across the takeover
    assert progress[-1] == 1.0 and len(progress) > 3
    records = [r for r in await watcher.call("migration.getAll") if r["vm"] == ids["db-01"]]
    assert [r["status"] for r in records] == ["success"]  # one record, ended once
    vm = (await watcher.call("xo.getAllObjects", {"filter": {"id": ids["db-01"]}}))[ids["db-01"]]
    assert vm["$container"] == ids["b1"]


async def test_a_token_of_one_instance_signs_in_on_the_other_and_its_deletion_closes_both(
    instances: Any,
) -> None:
    first, second = await instances(2)
    admin = await first.client()
    token = await admin.call("token.create", {"description": "shared"})
    here, there = await first.client(token), await second.client(token)
    assert (await there.call("session.getUser"))["email"] == "admin@admin.net"
    assert await admin.call("token.delete", {"tokens": [token]}) is True
    await asyncio.wait_for(here.closed.wait(), 10)
    await asyncio.wait_for(there.closed.wait(), 10)  # closed by the other instance too
    other = await XoClient.connect(second.ws_url)
    refused = await other.request("session.signIn", {"token": token})
    await other.close()
    assert refused["error"]["code"] == 3  # invalid credentials, on every instance


async def test_an_acl_added_on_one_instance_applies_on_the_other(instances: Any) -> None:
    first, second = await instances(2)
    admin = await first.client()
    ids = await ids_by_name(admin)
    user_id = await admin.call("user.create", {"email": "op@x.net", "password": "pw"})
    op = await XoClient.connect(second.ws_url)
    second.clients.append(op)
    await op.sign_in("op@x.net", "pw")
    assert ids["web-01"] not in await op.call("xo.getAllObjects", {"filter": {"type": "VM"}})
    await admin.call("acl.add", {"subject": user_id, "object": ids["web-01"], "action": "viewer"})

    async def sees_it() -> bool:
        return ids["web-01"] in await op.call("xo.getAllObjects", {"filter": {"type": "VM"}})

    await wait_until(sees_it, timeout=10)


async def test_migration_cancel_on_another_instance_reaches_its_owner(
    sim: Simulator, instances: Any
) -> None:
    sim.timing.time_scale = 0.05  # db-01 cross-pool: still cancellable a while
    first, second = await instances(2)
    starter, other = await first.client(), await second.client()
    ids = await ids_by_name(starter)
    migration_id = await starter.call(
        "migration.start", {"vm": ids["db-01"], "targetHost": ids["b1"]}
    )

    async def in_xapi() -> bool:
        record = await other.call("migration.get", {"id": migration_id})
        return record["status"] == "running" and record["xapiTask"] is not None

    await wait_until(in_xapi, timeout=30)
    answer = await other.call("migration.cancel", {"id": migration_id}, timeout=60)
    assert answer == {"cancelled": True, "status": "cancelled"}, answer
    final = await other.call("migration.wait", {"id": migration_id}, timeout=60)
    assert final["status"] == "cancelled"
