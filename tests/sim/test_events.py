"""event.from / event.inject conformance (xapi.md 4.2) and long-poll concurrency."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp

from tests.sim.helpers import (
    USER,
    call_xml,
    failure,
    in_thread,
    login,
    master_url,
    post,
    raw_call,
    raw_login,
    xenapi,
)
from xen.sim import Simulator, load_lab

TOKEN = re.compile(r"\d{20},\d{20}")


async def test_initial_sync_and_token(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> tuple[dict[str, Any], list[str]]:
        return x.event_from(["VM"], "", 1.0), x.VM.get_all()

    batch, vms = await xenapi(master_url(manifest), work)
    assert TOKEN.fullmatch(batch["token"])
    assert {e["ref"] for e in batch["events"]} == set(vms)
    for ev in batch["events"]:
        assert ev["class"] == "vm" and ev["operation"] == "add" and ev["timestamp"] == "0.0"
        assert ev["snapshot"]["uuid"] and ev["id"].isdigit()
    counts = batch["valid_ref_counts"]
    assert counts["vm"] == len(vms) and isinstance(counts["vm"], int)
    assert all(k == k.lower() for k in counts)


async def test_valid_ref_counts_are_i4(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    _, _, text = await post(url, call_xml("event.from", session, ["pool"], "", 0.0))
    assert re.search(r"<member><name>vm</name><value><i4>\d+</i4></value></member>", text)


async def test_coalescing_and_order(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> dict[str, Any]:
        (pool,) = x.pool.get_all()
        old_task = x.task.create("old", "")
        token = x.event_from(["*"], "", 0.0)["token"]
        added = x.task.create("added", "")
        x.task.set_other_config(added, {"a": "1"})  # add + mod -> one add
        gone = x.task.create("short-lived", "")
        x.task.destroy(gone)  # add + del -> nothing
        x.pool.set_name_description(pool, "one")
        x.pool.set_name_description(pool, "two")  # two mods -> one mod
        x.task.destroy(old_task)  # del, without snapshot
        batch = x.event_from(["task", "pool"], token, 1.0)
        return {"batch": batch, "added": added, "gone": gone, "old": old_task, "pool": pool}

    r = await xenapi(master_url(manifest), work)
    events = [(e["class"], e["operation"], e["ref"]) for e in r["batch"]["events"]]
    assert events == [
        ("task", "add", r["added"]),
        ("pool", "mod", r["pool"]),
        ("task", "del", r["old"]),
    ]
    by_ref = {e["ref"]: e for e in r["batch"]["events"]}
    assert by_ref[r["added"]]["snapshot"]["other_config"] == {"a": "1"}
    assert by_ref[r["pool"]]["snapshot"]["name_description"] == "two"
    assert "snapshot" not in by_ref[r["old"]]


async def test_subscriptions(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> None:
        (vm,) = x.VM.get_by_name_label("web-01")
        (other,) = x.VM.get_by_name_label("web-02")
        token = x.event_from(["vm"], "", 0.0)["token"]
        x.VM.set_name_description(other, "x")
        x.VM.set_name_description(vm, "y")
        for classes in (["VM"], ["vm"], ["Vm"], ["*"]):
            got = x.event_from(classes, token, 1.0)["events"]
            assert {e["ref"] for e in got} >= {vm, other}, classes
        only = x.event_from([f"vm/{vm}"], token, 1.0)["events"]
        assert [e["ref"] for e in only] == [vm]
        assert x.event_from(["no_such_class"], token, 0.05)["events"] == []

    await xenapi(master_url(manifest), work)


async def test_parse_failures(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    assert await failure(url, lambda x: x.event_from(["vm/a/b"], "", 0.0)) == [
        "EVENT_SUBSCRIPTION_PARSE_FAILURE", "vm/a/b"]  # fmt: skip
    assert await failure(url, lambda x: x.event_from([""], "", 0.0)) == [
        "EVENT_SUBSCRIPTION_PARSE_FAILURE", ""]  # fmt: skip
    assert await failure(url, lambda x: x.event_from(["vm"], "garbage", 0.0)) == [
        "EVENT_FROM_TOKEN_PARSE_FAILURE", "garbage"]  # fmt: skip


async def test_blocks_until_a_change(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    watcher = await in_thread(login, url)
    writer = await in_thread(login, url)
    (pool,) = await in_thread(writer.xenapi.pool.get_all)
    token = (await in_thread(watcher.xenapi.event_from, ["pool"], "", 0.0))["token"]
    start = time.monotonic()
    poll = asyncio.ensure_future(in_thread(watcher.xenapi.event_from, ["pool"], token, 10.0))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await in_thread(writer.xenapi.pool.set_name_description, pool, "changed")
    batch = await asyncio.wait_for(poll, 2)
    assert 0.2 <= time.monotonic() - start < 1.5
    assert [e["operation"] for e in batch["events"]] == ["mod"]
    assert batch["token"] > token


async def test_timeout_returns_empty_batch(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> tuple[dict[str, Any], float, str]:
        token = x.event_from(["sr"], "", 0.0)["token"]
        start = time.monotonic()
        batch = x.event_from(["sr"], token, 0.3)
        return batch, time.monotonic() - start, token

    batch, elapsed, token = await xenapi(master_url(manifest), work)
    assert batch["events"] == [] and 0.29 <= elapsed < 1.0
    assert batch["token"] >= token


async def test_inject_and_current_id(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> None:
        (pool,) = x.pool.get_all()
        token = x.event.inject("pool", pool)
        assert TOKEN.fullmatch(token)
        batch = x.event_from(["pool"], token, 1.0)
        assert [(e["operation"], e["ref"]) for e in batch["events"]] == [("mod", pool)]
        assert int(x.event.get_current_id()) >= int(token.split(",")[0])

    url = master_url(manifest)
    await xenapi(url, work)
    assert await failure(url, lambda x: x.event.inject("VM", "OpaqueRef:nope")) == [
        "HANDLE_INVALID", "VM", "OpaqueRef:nope"]  # fmt: skip


async def test_logout_during_long_poll(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    token = (await raw_call(url, "event.from", session, ["sr"], "", 0.0))["Value"]["token"]
    poll = asyncio.ensure_future(raw_call(url, "event.from", session, ["pool"], token, 5.0))
    await asyncio.sleep(0.1)
    await raw_call(url, "session.logout", session)
    # a change wakes the poll, which then finds its session gone
    other = await raw_login(url)
    (pool,) = (await raw_call(url, "pool.get_all", other))["Value"]
    await raw_call(url, "pool.set_name_description", other, pool, "wake")
    reply = await asyncio.wait_for(poll, 2)
    assert reply["ErrorDescription"] == ["SESSION_INVALID", session]


async def test_50_long_polls_do_not_block_calls(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    token = (await raw_call(url, "event.from", session, ["pool"], "", 0.0))["Value"]["token"]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def poll() -> Any:
            body = call_xml("event.from", session, ["pool"], token, 10.0)
            async with http.post(url, data=body) as resp:
                return await resp.text()

        polls = [asyncio.ensure_future(poll()) for _ in range(50)]
        await asyncio.sleep(0.3)
        start = time.monotonic()
        for _ in range(20):
            assert (await raw_call(url, "VM.get_all", session))["Status"] == "Success"
        assert time.monotonic() - start < 1.0
        assert not any(p.done() for p in polls)
        (pool,) = (await raw_call(url, "pool.get_all", session))["Value"]
        await raw_call(url, "pool.set_name_description", session, pool, "wake all")
        texts = await asyncio.wait_for(asyncio.gather(*polls), 3)
    assert all("wake all" in t for t in texts)


async def test_stop_ends_long_polls_quickly() -> None:
    sim = Simulator(load_lab(), time_scale=0.002)
    await sim.start()
    url = master_url(sim.manifest())
    session = (await raw_call(url, "session.login_with_password", USER, "password"))["Value"]
    poll = asyncio.ensure_future(
        raw_call(url, "event.from", session, ["pool"], "9" * 20 + ",0", 30.0)
    )
    await asyncio.sleep(0.1)
    start = time.monotonic()
    await sim.stop()
    assert time.monotonic() - start < 2.0
    await asyncio.wait_for(poll, 2)
