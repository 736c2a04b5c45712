"""Value rules (xapi.md 1.2 / 4.1) and the XAPI -> xo-server tables (xen/xo_shape.py)."""

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
from xen.xo_shape import (
    canonical_class,
    main_ip_address,
    normalize_vm_networks,
    refold,
    side_inputs,
    slim_side,
    to_xo,
)


class FakeLinker:
    pool_id = "pool-uuid"

    def __init__(
        self,
        ids: dict[str, str],
        records: dict[str, dict] | None = None,
        objects: dict[str, dict] | None = None,
    ) -> None:
        self.ids = ids
        self.records = records or {}  # by ref: what read() returns
        self.objects = objects or {}  # by id: what read_linked() returns
        self.missing: list[str] = []

    def id_of(self, ref: str, target: str | None = None) -> str | None:
        if ref == "OpaqueRef:NULL":
            return None
        if ref not in self.ids:
            self.missing.append(ref)
        return self.ids.get(ref)

    def ids_of(self, refs: list[str], target: str | None = None) -> list[str]:
        return [i for r in refs if (i := self.id_of(r, target)) is not None]

    def read(self, ref: str) -> dict | None:
        return self.records.get(ref)

    def read_linked(self, obj_id: str | None) -> dict | None:
        return self.objects.get(obj_id or "")


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


def test_vm_table() -> None:
    ids = {"OpaqueRef:h1": "host-1", "OpaqueRef:vbd": "vbd-1", "OpaqueRef:t": "task-1"}
    record = {
        "uuid": "vm-1",
        "name_label": "web",
        "power_state": "Running",
        "resident_on": "OpaqueRef:h1",
        "affinity": "OpaqueRef:NULL",
        "VBDs": ["OpaqueRef:vbd"],
        "VIFs": [],
        "VCPUs_max": "4",
        "VCPUs_at_startup": "2",
        "memory_static_max": "8589934592",
        "memory_dynamic_max": "4294967296",
        "domain_type": "hvm",
        "platform": {"videoram": "8", "viridian": "true"},
        "is_a_template": False,
        "is_a_snapshot": False,
        "is_control_domain": False,
        "current_operations": {"OpaqueRef:t": "pool_migrate", "OpaqueRef:gone": "clean_reboot"},
        "other_config": {"k": "v", "auto_poweron": "true"},
        "snapshot_time": xmlrpc.client.DateTime("19700101T00:00:00Z"),
    }
    linker = FakeLinker(ids)
    obj = to_xo("VM", "OpaqueRef:vm", record, linker)
    assert obj is not None
    assert obj["id"] == obj["uuid"] == "vm-1" and obj["type"] == "VM"
    assert obj["_xapiRef"] == "OpaqueRef:vm" and obj["$pool"] == obj["$poolId"] == "pool-uuid"
    assert obj["$container"] == "host-1" and obj["$VBDs"] == ["vbd-1"] and obj["VIFs"] == []
    assert "affinityHost" not in obj  # a null link is absent, as undefined in xo-server
    assert "VBDs" not in obj and "resident_on" not in obj  # raw fields never leak
    assert obj["other"] == {"k": "v", "auto_poweron": "true"} and obj["auto_poweron"] is True
    assert obj["memory"]["static"][1] == 8589934592 and obj["memory"]["size"] == 4294967296
    assert obj["CPUs"] == {"max": 4, "number": 2} and obj["coresPerSocket"] == 4
    assert obj["vga"] == "cirrus" and obj["videoram"] == "8" and obj["viridian"] is True
    # Operations are keyed by task id; a task not known (yet) is left out and awaited.
    assert obj["current_operations"] == {"task-1": "pool_migrate"}
    assert "OpaqueRef:gone" in linker.missing
    assert obj["vulnerabilities"] == {"xsa468": False} and "snapshot_time" not in obj
    assert "xenTools" not in obj  # running, but no metrics: unknown

    halted = to_xo(
        "VM",
        "r",
        record | {"power_state": "Halted", "resident_on": "OpaqueRef:NULL"},
        FakeLinker(ids),
    )
    assert halted is not None and halted["$container"] == "pool-uuid"
    for flags, expected in [
        ({"is_a_template": True}, "VM-template"),
        ({"is_a_template": True, "is_a_snapshot": True}, "VM-snapshot"),
        ({"is_control_domain": True}, "VM-controller"),
    ]:
        other = to_xo("VM", "r", record | flags, FakeLinker(ids))
        assert other is not None and other["type"] == expected
        assert "vulnerabilities" not in other  # VMs only
    snapshot = to_xo("VM", "r", record | {"is_a_snapshot": True}, FakeLinker(ids))
    assert snapshot is not None and snapshot["snapshot_time"] is None
    pv = to_xo("VM", "r", record | {"domain_type": "pv", "PV_args": "quiet"}, FakeLinker(ids))
    assert pv is not None and pv["PV_args"] == "quiet" and "vga" not in pv


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
        "OpaqueRef:cd": {},
        "OpaqueRef:shared": {"VDI": "vdi-shared"},
        "OpaqueRef:local": {"VDI": "vdi-local"},
    }
    objects = {
        "vdi-shared": {"$SR": "sr-nfs"},
        "vdi-local": {"$SR": "sr-local"},
        "sr-nfs": {"shared": True, "$PBDs": ["pbd-1"]},
        "sr-local": {"shared": False, "$PBDs": ["pbd-2"]},
        "pbd-2": {"host": "host-2"},
    }
    linker = FakeLinker({}, records, objects)
    assert _vm(record, linker)["$container"] == "host-2"
    # On shared storage only: the pool.
    only_shared = record | {"VBDs": ["OpaqueRef:cd", "OpaqueRef:shared"]}
    assert _vm(only_shared, linker)["$container"] == "pool-uuid"
    # Running: where it runs, whatever its disks.
    running = record | {"power_state": "Running", "resident_on": "OpaqueRef:h1"}
    ids = {"OpaqueRef:h1": "host-1"}
    assert _vm(running, FakeLinker(ids, records, objects))["$container"] == "host-1"


def _vm(record: dict, linker: FakeLinker, sides: dict | None = None) -> dict:
    obj = to_xo("VM", "OpaqueRef:vm", record, linker, sides)
    assert obj is not None
    return obj


def test_guest_tools_and_addresses() -> None:
    assert main_ip_address({}) is None
    assert main_ip_address({"0/ip": "10.0.0.1", "0/ipv6/0": "fe80::1"}) == "10.0.0.1"
    assert main_ip_address({"1/ipv4/0": "10.1.0.1", "0/ipv4/1": "10.0.0.2"}) == "10.0.0.2"
    assert main_ip_address({"0/ipv6/1": "fe80::2", "0/ipv6/0": "fe80::1"}) == "fe80::1"
    assert normalize_vm_networks({"0/ip": "10.0.0.1 10.0.0.2", "0/ipv4/0": "10.0.0.1"}) == {
        "0/ipv4/0": "10.0.0.1",
        "0/ipv4/1": "10.0.0.2",
    }

    guest = slim_side(
        "VM_guest_metrics",
        {
            "uuid": "gm-1",
            "networks": {"0/ip": "10.0.0.1", "0/ipv6/0": "fe80::1"},
            "PV_drivers_version": {"major": "8", "minor": "3", "micro": "0", "build": "1"},
            "PV_drivers_up_to_date": True,
            "PV_drivers_detected": True,
            "os_version": {"name": "Debian", "uname": "6.1.0"},
            "other": {"feature-balloon": "1"},
            "disks": {"0": "big and unused"},
        },
    )
    assert "disks" not in guest and "uuid" not in guest  # kept slim
    metrics = slim_side("VM_metrics", {"VCPUs_number": "3", "memory_actual": "1073741824"})
    vm = {"uuid": "vm-1", "power_state": "Running", "VCPUs_max": "4", "VCPUs_at_startup": "2"}
    obj = _vm(vm, FakeLinker({}), {"metrics": metrics, "guest_metrics": guest})
    assert obj["addresses"] == {"0/ipv4/0": "10.0.0.1", "0/ipv6/0": "fe80::1"}
    assert obj["mainIpAddress"] == "10.0.0.1" and obj["os_version"]["name"] == "Debian"
    assert obj["xenTools"] == {"major": 8, "minor": 3, "version": 8.3}
    assert obj["pvDriversDetected"] is True and obj["pvDriversUpToDate"] is True
    assert obj["pvDriversVersion"] == "8.3.0-1" and obj["managementAgentDetected"] is True
    assert obj["CPUs"]["number"] == 3 and obj["memory"]["size"] == 1073741824

    # A guest agent without PV drivers, then no agent at all, then halted.
    agent_only = guest | {"PV_drivers_detected": False, "PV_drivers_version": {}}
    obj = _vm(vm, FakeLinker({}), {"metrics": metrics, "guest_metrics": agent_only})
    assert obj["xenTools"] is False and obj["pvDriversDetected"] is False
    assert "pvDriversVersion" not in obj and "pvDriversUpToDate" not in obj
    assert obj["CPUs"]["number"] == 2  # without tools, VCPUs_at_startup
    obj = _vm(vm, FakeLinker({}), {"metrics": metrics, "guest_metrics": None})
    assert obj["addresses"] == {} and "mainIpAddress" not in obj and obj["os_version"] is None
    assert obj["xenTools"] is False and "pvDriversDetected" not in obj
    obj = _vm(vm | {"power_state": "Halted"}, FakeLinker({}), {"metrics": metrics})
    assert "xenTools" not in obj and obj["memory"]["size"] is None  # no dynamic max given

    # The side fields again from the kept inputs only, as the cache does on a change.
    inputs = side_inputs("VM", vm | {"name_label": "not kept"})
    assert inputs is not None and "name_label" not in inputs
    again = refold(
        "VM", "r", obj, inputs, FakeLinker({}), {"metrics": metrics, "guest_metrics": guest}
    )
    assert again["name_label"] == obj["name_label"] and again["xenTools"]["major"] == 8


def test_small_tables() -> None:
    linker = FakeLinker({"OpaqueRef:sr": "sr-1", "OpaqueRef:h": "host-1"})
    vdi = to_xo(
        "VDI",
        "OpaqueRef:vdi",
        {
            "uuid": "vdi-1",
            "type": "user",
            "SR": "OpaqueRef:sr",
            "virtual_size": "10",
            "physical_utilisation": "4",
        },
        linker,
    )
    assert vdi is not None and vdi["type"] == "VDI" and vdi["VDI_type"] == "user"
    assert vdi["$SR"] == "sr-1" and vdi["size"] == 10 and vdi["usage"] == 4
    assert vdi["chainPhysicalUsage"] == 4 and "snapshot_time" not in vdi
    missing = FakeLinker({})
    vdi = to_xo("VDI", "r", {"uuid": "v", "SR": "OpaqueRef:unknown"}, missing)
    assert vdi is not None and "$SR" not in vdi and missing.missing == ["OpaqueRef:unknown"]
    pbd = to_xo(
        "PBD",
        "r",
        {"uuid": "p", "host": "OpaqueRef:h", "device_config": {"server": "s", "chappassword": "x"}},
        linker,
    )
    assert pbd is not None and pbd["host"] == "host-1"
    assert pbd["device_config"] == {"server": "s", "chappassword": "* obfuscated *"}
    vbd = to_xo("VBD", "r", {"uuid": "b", "device": "", "type": "CD", "mode": "RO"}, linker)
    assert (
        vbd is not None and vbd["device"] is None and vbd["is_cd_drive"] is vbd["read_only"] is True
    )
    pif = to_xo(
        "PIF", "r", {"uuid": "i", "MTU": "1500", "VLAN": "-1", "metrics": "OpaqueRef:NULL"}, linker
    )
    assert pif is not None and pif["mtu"] == 1500 and pif["vlan"] == -1
    assert pif["carrier"] is False and "speed" not in pif
    assert to_xo("console", "r", {"uuid": "c"}, linker) is None  # not published


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
        "error_info": [],
    }
    obj = to_xo(
        canonical_class("task"),
        "OpaqueRef:t",
        record,
        FakeLinker({"OpaqueRef:h1": "host-1", "OpaqueRef:vm": "vm-1"}),
    )
    assert obj is not None
    assert obj["created"] == 1708985327 and obj["finished"] is None
    assert obj["$host"] == "host-1" and obj["progress"] == 0.25
    assert obj["allowedOperations"] == ["cancel"] and obj["xapiRef"] == "OpaqueRef:t"
    assert obj["applies_to"] == "vm-1" and obj["error_info"] == []
    assert canonical_class("vm_guest_metrics") == "VM_guest_metrics"
