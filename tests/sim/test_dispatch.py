"""Dispatch conformance (xapi.md 1.4, 2.1): names, counts, generic accessors, lookups."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.sim.helpers import failure, master_url, raw_call, raw_login, xenapi
from xen.sim import Simulator
from xen.sim.db import default_schema

CLASSES = ["pool", "host", "host_metrics", "VM", "VM_metrics", "VM_guest_metrics", "VBD", "VDI",
           "SR", "PBD", "VIF", "network", "PIF", "task", "message", "SM"]  # fmt: skip


async def test_records_are_complete_per_datamodel(manifest: dict[str, Any]) -> None:
    def fetch(x: Any) -> dict[str, Any]:
        return {cls: getattr(x, cls).get_all_records() for cls in CLASSES}

    records = await xenapi(master_url(manifest), fetch)
    schema = default_schema()
    for cls in CLASSES:
        for rec in records[cls].values():
            assert set(rec) == set(schema.cls(cls).fields), cls
    assert len(records["pool"]) == 1
    assert len(records["host"]) == 3 and len(records["host_metrics"]) == 3


async def test_get_record_get_field_by_uuid_by_name(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> None:
        (vm,) = x.VM.get_by_name_label("web-01")
        rec = x.VM.get_record(vm)
        assert x.VM.get_by_uuid(rec["uuid"]) == vm
        assert x.VM.get_name_label(vm) == "web-01"
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_memory_static_max(vm) == str(2 * 1024**3)
        host = x.VM.get_resident_on(vm)
        assert x.host.get_name_label(host) == "a1"
        assert vm in x.host.get_resident_VMs(host)
        assert x.VM.get_by_name_label("no such vm") == []
        for vbd in rec["VBDs"]:
            assert x.VBD.get_VM(vbd) == vm

    await xenapi(master_url(manifest), work)


async def test_underscore_aliases(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> None:
        assert sorted(x.VM_get_all()) == sorted(x.VM.get_all())
        assert x.host_metrics_get_all() == x.host_metrics.get_all()
        assert "token" in x.event_from(["pool"], "", 0.0)

    await xenapi(master_url(manifest), work)


async def test_handle_invalid(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    assert await failure(url, lambda x: x.VM.get_record("OpaqueRef:nope")) == [
        "HANDLE_INVALID", "VM", "OpaqueRef:nope"]  # fmt: skip
    # a ref of another class is invalid too
    host_ref = await xenapi(url, lambda x: x.host.get_all()[0])
    assert await failure(url, lambda x: x.VM.get_name_label(host_ref)) == [
        "HANDLE_INVALID", "VM", host_ref]  # fmt: skip


async def test_uuid_invalid(manifest: dict[str, Any]) -> None:
    assert await failure(master_url(manifest), lambda x: x.SR.get_by_uuid("1234")) == [
        "UUID_INVALID", "SR", "1234"]  # fmt: skip


async def test_method_unknown(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    assert await failure(url, lambda x: x.VM.no_such_message("x")) == [
        "MESSAGE_METHOD_UNKNOWN", "VM.no_such_message"]  # fmt: skip
    assert (await raw_call(url, "Nope.nothing")) == {
        "Status": "Failure", "ErrorDescription": ["MESSAGE_METHOD_UNKNOWN", "Nope.nothing"]}  # fmt: skip
    # with params, the session is checked first
    assert (await raw_call(url, "Nope.nothing", "OpaqueRef:bad")) == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:bad"]}  # fmt: skip


@pytest.mark.parametrize(
    ("method", "nargs", "expected"),
    [("VM.pool_migrate", 2, "3"), ("VM.pool_migrate", 4, "3"), ("VM.migrate_send", 5, "6"),
     ("VM.migrate_send", 9, "6"), ("VM.assert_can_migrate", 8, "6"), ("VM.get_record", 0, "1"),
     ("host.migrate_receive", 1, "3")],
)  # fmt: skip
async def test_parameter_count_mismatch(
    manifest: dict[str, Any], method: str, nargs: int, expected: str
) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    reply = await raw_call(url, method, session, *(["x"] * nargs))
    assert reply["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", method, expected, str(nargs)]  # fmt: skip


async def test_login_takes_2_to_4_args(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    for args in (
        ["root", "password"],
        ["root", "password", "1.0"],
        ["root", "password", "1.0", "o"],
    ):
        assert (await raw_call(url, "session.login_with_password", *args))["Status"] == "Success"
    reply = await raw_call(url, "session.login_with_password", "root")
    assert reply["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", "2", "1"]  # fmt: skip


async def test_no_async_mode_for_getters_session_task_event(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    for method, args in [("Async.VM.get_all", []), ("Async.session.logout", []),
                         ("Async.task.create", ["a", "b"]), ("Async.event.inject", ["pool", "x"])]:  # fmt: skip
        reply = await raw_call(url, method, session, *args)
        assert reply["ErrorDescription"] == [
            "Fault", f"No async mode for this operation (rpc: {method})"]  # fmt: skip


async def test_setters_and_map_accessors(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> None:
        (pool,) = x.pool.get_all()
        x.pool.add_to_other_config(pool, "xo:barrier", "1")
        assert x.pool.get_other_config(pool)["xo:barrier"] == "1"
        try:
            x.pool.add_to_other_config(pool, "xo:barrier", "2")
            raise AssertionError("duplicate key accepted")
        except Exception as exc:  # XenAPI.Failure
            assert exc.details[0] == "MAP_DUPLICATE_KEY"  # type: ignore[attr-defined]
        x.pool.remove_from_other_config(pool, "xo:barrier")
        x.pool.remove_from_other_config(pool, "never there")  # no error
        assert "xo:barrier" not in x.pool.get_other_config(pool)
        (vm,) = x.VM.get_by_name_label("web-02")
        x.VM.set_name_description(vm, "hello")
        assert x.VM.get_name_description(vm) == "hello"
        x.VM.add_tags(vm, "prod")
        x.VM.add_tags(vm, "prod")
        assert x.VM.get_tags(vm) == ["prod"]
        x.VM.remove_tags(vm, "prod")
        assert x.VM.get_tags(vm) == []

    await xenapi(master_url(manifest), work)


async def test_blocked_operations_update_allowed_operations(manifest: dict[str, Any]) -> None:
    def work(x: Any) -> tuple[list[str], list[str], list[str]]:
        (locked,) = x.VM.get_by_name_label("locked-vm")
        (web,) = x.VM.get_by_name_label("web-01")
        before = x.VM.get_allowed_operations(web)
        x.VM.add_to_blocked_operations(web, "pool_migrate", "no")
        after = x.VM.get_allowed_operations(web)
        return x.VM.get_allowed_operations(locked), before, after

    locked, before, after = await xenapi(master_url(manifest), work)
    assert "pool_migrate" not in locked and "migrate_send" not in locked
    assert {"pool_migrate", "migrate_send"} <= set(before)
    assert "pool_migrate" not in after and "migrate_send" in after


async def test_call_counters(sim: Simulator, manifest: dict[str, Any]) -> None:
    pool = sim.pool("Pool A")
    pool.reset_stats()
    await xenapi(master_url(manifest), lambda x: (x.VM.get_all_records(), x.VM.get_all_records()))
    stats = pool.stats()
    assert stats["VM.get_all_records"] == 2
    assert stats["session.login_with_password"] == 1 and stats["session.logout"] == 1
    async with aiohttp.ClientSession() as http, http.get(f"{master_url(manifest)}sim/stats") as r:
        doc = await r.json()
    assert doc["pool"] == "Pool A" and doc["calls"]["VM.get_all_records"] == 2
    assert doc["pools"]["Pool B"] == {}
