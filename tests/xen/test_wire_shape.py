"""Value rules (xapi.md 1.2 / 4.1) and the generic XAPI -> xo-server conversion."""

from __future__ import annotations

import xmlrpc.client

import pytest

from xen.errors import TaskCancelled, XapiError
from xen.pool import task_outcome
from xen.wire import (
    datetime_to_seconds,
    decode_task_result,
    member_url,
    prepare_arg,
)
from xen.xo_shape import canonical_class, to_xo


class FakeLinker:
    pool_id = "pool-uuid"

    def __init__(self, ids: dict[str, str], records: dict[str, dict] | None = None) -> None:
        self.ids = ids
        self.records = records or {}
        self.missing: list[str] = []

    def id_of(self, ref: str, target: str | None = None) -> str | None:
        if ref == "OpaqueRef:NULL":
            return None
        if ref not in self.ids:
            self.missing.append(ref)
        return self.ids.get(ref)

    def read(self, ref: str) -> dict | None:
        return self.records.get(ref)


def test_prepare_arg_sends_int64_as_strings_and_refuses_none() -> None:
    assert prepare_arg(2**40) == str(2**40)
    assert prepare_arg(True) is True and prepare_arg(1.5) == 1.5
    assert prepare_arg({"a": [1, {"b": 2**33}]}) == {"a": ["1", {"b": str(2**33)}]}
    with pytest.raises(TypeError):
        prepare_arg({"a": None})
    # The result really goes over XML-RPC (ints beyond 32 bits would raise OverflowError).
    xmlrpc.client.dumps((prepare_arg(2**40),))


def test_datetimes() -> None:
    assert datetime_to_seconds(xmlrpc.client.DateTime("19700101T00:00:00Z")) is None
    assert datetime_to_seconds(xmlrpc.client.DateTime("20240226T22:08:47Z")) == 1708985327
    assert datetime_to_seconds("20240226T22:08:47Z") == 1708985327


def test_task_results() -> None:
    assert decode_task_result("") is None
    assert decode_task_result("<value></value>") is None
    assert decode_task_result("<value>OpaqueRef:abc</value>") == "OpaqueRef:abc"
    assert decode_task_result(
        "<value><struct><member><name>k</name><value>v</value></member></struct></value>"
    ) == {"k": "v"}
    assert task_outcome("r", {"status": "success", "result": "<value>x</value>"}) == "x"
    with pytest.raises(TaskCancelled):
        task_outcome("r", {"status": "cancelled", "error_info": []})
    with pytest.raises(XapiError) as info:
        task_outcome("r", {"status": "failure", "error_info": ["VM_REQUIRES_SR", "a", "b"]})
    assert (info.value.code, info.value.params) == ("VM_REQUIRES_SR", ["a", "b"])
    assert info.value.task is not None


def test_member_url_keeps_scheme_port_and_brackets_ipv6() -> None:
    assert member_url("https://10.0.0.1/", "10.0.0.2") == "https://10.0.0.2/"
    assert member_url("http://127.0.1.1:4430/", "127.0.1.3") == "http://127.0.1.3:4430/"
    assert member_url("https://[fe80::1]:443/", "fe80::2") == "https://[fe80::2]:443/"


def test_generic_conversion() -> None:
    ids = {"OpaqueRef:h1": "host-1", "OpaqueRef:vbd": "vbd-1", "OpaqueRef:t": "task-1"}
    record = {
        "uuid": "vm-1",
        "name_label": "web",
        "power_state": "Running",
        "resident_on": "OpaqueRef:h1",
        "affinity": "OpaqueRef:NULL",
        "VBDs": ["OpaqueRef:vbd"],
        "VIFs": [],
        "memory_static_max": "8589934592",
        "domid": "-1",
        "is_a_template": False,
        "is_a_snapshot": False,
        "is_control_domain": False,
        "current_operations": {"OpaqueRef:t": "pool_migrate"},
        "other_config": {"k": "v"},
        "snapshot_time": xmlrpc.client.DateTime("19700101T00:00:00Z"),
    }
    obj = to_xo("VM", "OpaqueRef:vm", record, FakeLinker(ids))
    assert obj["id"] == "vm-1" and obj["type"] == "VM" and obj["_xapiRef"] == "OpaqueRef:vm"
    assert obj["$pool"] == obj["$poolId"] == "pool-uuid"
    assert obj["$container"] == "host-1" and obj["$resident_on"] == "host-1"
    assert obj["$affinity"] is None and obj["affinityHost"] is None
    assert obj["$VBDs"] == ["vbd-1"] and obj["$VIFs"] == [] and obj["VIFs"] == []
    assert "VBDs" not in obj and "resident_on" not in obj  # raw refs never leak
    assert obj["memory_static_max"] == 8589934592 and obj["domid"] == -1
    assert obj["current_operations"] == {"task-1": "pool_migrate"}
    assert obj["snapshot_time"] is None

    halted = to_xo("VM", "OpaqueRef:vm", record | {"power_state": "Halted"}, FakeLinker(ids))
    assert halted["$container"] == "pool-uuid"
    for flags, expected in [
        ({"is_a_template": True}, "VM-template"),
        ({"is_a_template": True, "is_a_snapshot": True}, "VM-snapshot"),
        ({"is_control_domain": True}, "VM-controller"),
    ]:
        assert to_xo("VM", "r", record | flags, FakeLinker(ids))["type"] == expected


def test_type_field_renamed_and_missing_links_reported() -> None:
    linker = FakeLinker({})
    obj = to_xo(
        "VDI", "OpaqueRef:vdi", {"uuid": "vdi-1", "type": "user", "SR": "OpaqueRef:sr"}, linker
    )
    assert obj["type"] == "VDI" and obj["VDI_type"] == "user"
    assert obj["$SR"] is None and linker.missing == ["OpaqueRef:sr"]


def test_task_shape() -> None:
    record = {
        "uuid": "task-1",
        "name_label": "Async.VM.pool_migrate",
        "status": "pending",
        "progress": 0.25,
        "created": xmlrpc.client.DateTime("20240226T22:08:47Z"),
        "finished": xmlrpc.client.DateTime("19700101T00:00:00Z"),
        "resident_on": "OpaqueRef:h1",
        "allowed_operations": ["cancel"],
        "other_config": {"applies_to": "OpaqueRef:vm"},
    }
    obj = to_xo(
        canonical_class("task"),
        "OpaqueRef:t",
        record,
        FakeLinker({"OpaqueRef:h1": "host-1", "OpaqueRef:vm": "vm-1"}),
    )
    assert obj["created"] == 1708985327 and obj["finished"] is None
    assert obj["$host"] == "host-1" and obj["progress"] == 0.25
    assert obj["allowedOperations"] == ["cancel"] and obj["xapiRef"] == "OpaqueRef:t"
    assert obj["applies_to"] == "vm-1"
    assert canonical_class("vm_guest_metrics") == "VM_guest_metrics"
