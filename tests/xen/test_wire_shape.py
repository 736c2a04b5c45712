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
from xen.xo_shape import FOLDS, canonical_class, main_ip_address, to_xo


class FakeLinker:
    pool_id = "pool-uuid"

    def __init__(
        self,
        ids: dict[str, str],
        records: dict[str, dict] | None = None,
        objects: dict[str, dict] | None = None,
    ) -> None:
        self.ids = ids
        self.records = records or {}  # by ref: what read() and side() return
        self.objects = objects or {}  # by id: what read_linked() returns
        self.missing: list[str] = []

    def id_of(self, ref: str, target: str | None = None) -> str | None:
        if ref == "OpaqueRef:NULL":
            return None
        if ref not in self.ids:
            self.missing.append(ref)
        return self.ids.get(ref)

    def read(self, ref: str) -> dict | None:
        return self.records.get(ref)

    def read_linked(self, obj_id: str | None) -> dict | None:
        return self.objects.get(obj_id or "")

    def side(self, ref: str) -> dict | None:
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


def test_halted_vm_container_is_the_host_of_its_local_sr() -> None:
    record = {
        "uuid": "vm-1",
        "power_state": "Halted",
        "resident_on": "OpaqueRef:NULL",
        "VBDs": ["OpaqueRef:cd", "OpaqueRef:shared", "OpaqueRef:local"],
        "is_a_template": False,
        "is_a_snapshot": False,
    }
    records = {  # the VBDs as published (XO shape): links are ids
        "OpaqueRef:cd": {"$VDI": None},
        "OpaqueRef:shared": {"$VDI": "vdi-shared"},
        "OpaqueRef:local": {"$VDI": "vdi-local"},
    }
    objects = {
        "vdi-shared": {"$SR": "sr-nfs"},
        "vdi-local": {"$SR": "sr-local"},
        "sr-nfs": {"shared": True, "$container": "pool-uuid"},
        "sr-local": {"shared": False, "$container": "host-2"},
    }
    linker = FakeLinker({}, records, objects)
    assert to_xo("VM", "OpaqueRef:vm", record, linker)["$container"] == "host-2"
    # On shared storage only: the pool. A template or a snapshot: the pool.
    only_shared = record | {"VBDs": ["OpaqueRef:cd", "OpaqueRef:shared"]}
    assert to_xo("VM", "r", only_shared, linker)["$container"] == "pool-uuid"
    for flag in ("is_a_template", "is_a_snapshot"):
        assert to_xo("VM", "r", record | {flag: True}, linker)["$container"] == "pool-uuid"
    # Running: where it runs, whatever its disks.
    running = record | {"power_state": "Running", "resident_on": "OpaqueRef:h1"}
    ids = {"OpaqueRef:h1": "host-1"}
    assert to_xo("VM", "r", running, FakeLinker(ids, records, objects))["$container"] == "host-1"


def test_guest_metrics_fields() -> None:
    assert main_ip_address({}) is None
    assert main_ip_address({"0/ip": "10.0.0.1", "0/ipv6/0": "fe80::1"}) == "10.0.0.1"
    assert main_ip_address({"1/ipv4/0": "10.1.0.1", "0/ipv4/1": "10.0.0.2"}) == "10.0.0.2"
    assert main_ip_address({"0/ipv6/1": "fe80::2", "0/ipv6/0": "fe80::1"}) == "fe80::1"

    raw = {
        "uuid": "gm-1",
        "networks": {"0/ip": "10.0.0.1", "0/ipv4/0": "10.0.0.1", "0/ipv6/0": "fe80::1"},
        "PV_drivers_version": {"major": "8", "minor": "3", "micro": "0", "build": "1"},
        "PV_drivers_up_to_date": True,
        "PV_drivers_detected": True,
        "os_version": {"name": "Debian", "uname": "6.1.0"},
        "other": {"feature-balloon": "1"},
    }
    slim = FOLDS["VM_guest_metrics"].slim(raw)
    assert "os_version" not in slim and "other" not in slim  # kept data-light
    vm = {
        "uuid": "vm-1",
        "power_state": "Running",
        "resident_on": "OpaqueRef:h1",
        "guest_metrics": "OpaqueRef:gm",
    }
    ids = {"OpaqueRef:h1": "host-1", "OpaqueRef:gm": "gm-1"}
    obj = to_xo("VM", "OpaqueRef:vm", vm, FakeLinker(ids, {"OpaqueRef:gm": slim}))
    assert obj["$guest_metrics"] == "gm-1"
    assert obj["addresses"] == raw["networks"] and obj["mainIpAddress"] == "10.0.0.1"
    assert obj["PV_drivers"] is True and obj["PV_drivers_up_to_date"] is True
    assert obj["PV_drivers_version"] == "8.3"

    # Guest metrics without PV drivers (a guest agent only), then none at all.
    agent_only = slim | {"PV_drivers_detected": False, "PV_drivers_version": {}}
    obj = to_xo("VM", "r", vm, FakeLinker(ids, {"OpaqueRef:gm": agent_only}))
    assert obj["PV_drivers"] is False and obj["PV_drivers_version"] is None
    assert obj["mainIpAddress"] == "10.0.0.1"
    obj = to_xo("VM", "r", vm | {"guest_metrics": "OpaqueRef:NULL"}, FakeLinker(ids))
    assert obj["addresses"] == {} and obj["mainIpAddress"] is None
    assert obj["PV_drivers"] is False and obj["PV_drivers_up_to_date"] is None


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
