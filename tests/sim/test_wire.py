"""Wire protocol conformance (xapi.md 1.1-1.3): envelope, encodings, paths, JSON-RPC, bad input."""

from __future__ import annotations

import json
import re
import xmlrpc.client
from typing import Any

import aiohttp
import pytest

from tests.sim.helpers import call_xml, master_url, post, raw_call, raw_login
from xen.sim.db import default_schema


async def test_success_envelope_and_untyped_int_strings(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    vm = (await raw_call(url, "VM.get_by_name_label", session, "db-01"))["Value"][0]
    status, ctype, text = await post(url, call_xml("VM.get_memory_static_max", session, vm))
    assert status == 200 and ctype == "text/xml"
    # int64 is an untyped <value> (a string), inside the Status/Value struct.
    assert "<member><name>Status</name><value>Success</value></member>" in text
    assert f"<value>{16 * 1024**3}</value>" in text
    assert "<int>" not in text and "<i4>" not in text and "<fault>" not in text


async def test_record_encodings(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    vm = (await raw_call(url, "VM.get_by_name_label", session, "halted-01"))["Value"][0]
    _, _, text = await post(url, call_xml("VM.get_record", session, vm))
    assert "<value><boolean>0</boolean></value>" in text
    assert re.search(r"<dateTime.iso8601>\d{8}T\d\d:\d\d:\d\dZ</dateTime.iso8601>", text)
    assert "<value>OpaqueRef:NULL</value>" in text  # resident_on of a halted VM
    rec = xmlrpc.client.loads(text)[0][0]["Value"]
    assert rec["domid"] == "-1" and rec["power_state"] == "Halted"
    assert isinstance(rec["snapshot_time"], xmlrpc.client.DateTime)
    assert rec["snapshot_time"].value == "19700101T00:00:00Z"
    metrics = (await raw_call(url, "VM.get_metrics", session, vm))["Value"]
    _, _, mtext = await post(url, call_xml("VM_metrics.get_record", session, metrics))
    assert "<double>" not in mtext or re.search(r"<double>[-0-9.e]+</double>", mtext)


async def test_void_is_empty_string(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    pool = (await raw_call(url, "pool.get_all", session))["Value"][0]
    _, _, text = await post(url, call_xml("pool.set_name_description", session, pool, "x"))
    assert "<member><name>Value</name><value></value></member>" in text


async def test_failure_envelope_all_strings(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    _, _, text = await post(url, call_xml("VM.pool_migrate", session, "x"))
    reply = xmlrpc.client.loads(text)[0][0]
    assert reply == {
        "Status": "Failure",
        "ErrorDescription": ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.pool_migrate", "3", "1"],
    }


async def test_list_methods_is_raw_and_complete(manifest: dict[str, Any]) -> None:
    reply = await raw_call(master_url(manifest), "system.listMethods")
    assert isinstance(reply, list)  # no envelope
    methods = set(reply)
    for cls, spec in default_schema().classes.items():
        if "get_all_records" in spec.messages:
            assert f"{cls}.get_all_records" in methods
    assert {
        "event.from",
        "event.inject",
        "VM.migrate_send",
        "session.login_with_password",
    } <= methods


async def test_is_alive(manifest: dict[str, Any]) -> None:
    reply = await raw_call(master_url(manifest), "system.isAlive", "ping")
    assert reply == {"Status": "Success", "Value": "ping"}


@pytest.mark.parametrize("path", ["/", "/RPC2", "/xmlrpc", "/anything/else"])
async def test_xmlrpc_on_every_post_path(manifest: dict[str, Any], path: str) -> None:
    url = master_url(manifest)
    status, ctype, text = await post(
        url, call_xml("session.login_with_password", "root", "password"), path
    )
    assert status == 200 and ctype == "text/xml"
    assert xmlrpc.client.loads(text)[0][0]["Value"].startswith("OpaqueRef:")


async def test_cors_header(manifest: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(master_url(manifest), data=call_xml("system.listMethods")) as resp,
    ):
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "body",
    [b"", b"not xml at all", b"<methodCall><methodName>VM.get_all", b"<methodCall></methodCall>",
     b"<methodCall><methodName>x</methodName><params><param><value><int>zz</int></value></param></params></methodCall>"],
)  # fmt: skip
async def test_malformed_xml_gets_http_500_html(manifest: dict[str, Any], body: bytes) -> None:
    url = master_url(manifest)
    status, ctype, text = await post(url, body)
    assert status == 500 and ctype == "text/html"
    assert "Parse_error" in text
    # and the host is still fine
    assert (await raw_call(url, "system.isAlive", "x"))["Status"] == "Success"


# -- argument types -------------------------------------------------------------------------


def _int_param(tag: str, value: str) -> bytes:
    return value.join([f"<value><{tag}>", f"</{tag}></value>"]).encode()


@pytest.mark.parametrize("encoded", ["<value><int>7</int></value>", "<value><i4>7</i4></value>",
                                     "<value><i8>7</i8></value>", "<value>7</value>",
                                     "<value><string>7</string></value>"])  # fmt: skip
async def test_int_params_accept_ints_and_strings(manifest: dict[str, Any], encoded: str) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    vm = (await raw_call(url, "VM.get_by_name_label", session, "halted-01"))["Value"][0]
    body = (
        "<methodCall><methodName>VM.set_user_version</methodName><params>"
        f"<param><value>{session}</value></param><param><value>{vm}</value></param>"
        f"<param>{encoded}</param></params></methodCall>"
    )
    _, _, text = await post(url, body)
    assert xmlrpc.client.loads(text)[0][0]["Status"] == "Success"
    reply = await raw_call(url, "VM.get_user_version", session, vm)
    assert reply["Value"] == "7"


@pytest.mark.parametrize(
    ("method", "args", "field"),
    [
        ("VM.set_user_version", ["not a number"], "value"),
        ("VM.set_user_version", [None], "value"),
        ("VM.set_ha_always_run", ["true"], "value"),  # bools only as <boolean>
        ("VM.set_VCPUs_params", [["a list"]], "value"),
        ("VM.set_name_label", [12], "value"),
    ],
)
async def test_wrong_types_are_xapi_errors(
    manifest: dict[str, Any], method: str, args: list[Any], field: str
) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    vm = (await raw_call(url, "VM.get_by_name_label", session, "halted-01"))["Value"][0]
    reply = await raw_call(url, method, session, vm, *args)
    assert reply == {"Status": "Failure", "ErrorDescription": ["FIELD_TYPE_ERROR", field]}


async def test_float_param_accepts_int_and_string(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    for timeout in (0, "0.01", 0.01):
        reply = await raw_call(url, "event.from", session, ["pool"], "", timeout)
        assert reply["Status"] == "Success"


async def test_bad_enum_value(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    vm = (await raw_call(url, "VM.get_by_name_label", session, "halted-01"))["Value"][0]
    reply = await raw_call(url, "VM.set_actions_after_crash", session, vm, "explode")
    assert reply["Status"] == "Failure" and reply["ErrorDescription"][0] == "INVALID_VALUE"
    ok = await raw_call(url, "VM.set_actions_after_crash", session, vm, "DESTROY")
    assert ok["Status"] == "Success"
    assert (await raw_call(url, "VM.get_actions_after_crash", session, vm))["Value"] == "destroy"


# -- JSON-RPC ---------------------------------------------------------------------------------


async def _json(url: str, doc: Any) -> tuple[int, str, Any]:
    status, ctype, text = await post(url, json.dumps(doc), "/jsonrpc")
    return status, ctype, json.loads(text) if ctype == "application/json" else text


async def test_jsonrpc_v1_and_v2(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    _, ctype, reply = await _json(
        url, {"method": "session.login_with_password", "params": ["root", "password"], "id": 1}
    )
    assert ctype == "application/json"
    assert reply["error"] is None and reply["id"] == 1
    session = reply["result"]
    _, _, v2 = await _json(
        url, {"jsonrpc": "2.0", "method": "VM.get_all_records", "params": [session], "id": "a"}
    )
    assert v2["jsonrpc"] == "2.0" and v2["id"] == "a"
    rec = next(r for r in v2["result"].values() if r["name_label"] == "db-01")
    assert rec["memory_static_max"] == 16 * 1024**3  # a JSON number, not a string
    assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", rec["snapshot_time"])
    # sessions are shared with the XML-RPC endpoint
    assert (await raw_call(url, "pool.get_all", session))["Status"] == "Success"


async def test_jsonrpc_errors(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    _, _, v1 = await _json(url, {"method": "VM.get_all", "params": ["OpaqueRef:x"], "id": 2})
    assert v1 == {"result": None, "error": ["SESSION_INVALID", "OpaqueRef:x"], "id": 2}
    _, _, v2 = await _json(
        url, {"jsonrpc": "2.0", "method": "VM.get_all", "params": ["OpaqueRef:x"], "id": 3}
    )
    assert v2 == {
        "jsonrpc": "2.0",
        "error": {"code": 1, "message": "SESSION_INVALID", "data": ["OpaqueRef:x"]},
        "id": 3,
    }


@pytest.mark.parametrize("body", [{"method": "VM.get_all", "params": []}, "nonsense", [1, 2]])
async def test_jsonrpc_malformed_is_http_500(manifest: dict[str, Any], body: Any) -> None:
    status, ctype, _ = await post(
        master_url(manifest), body if isinstance(body, str) else json.dumps(body), "/jsonrpc"
    )
    assert status == 500 and ctype == "text/html"
