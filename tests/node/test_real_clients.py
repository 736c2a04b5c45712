"""Compatibility with the real Xen Orchestra JavaScript clients, run by node from pytest.

- xo-lib (npm, 0.9.0) and jsonrpc-websocket-client 0.7.2 (the transport under xo-cli's
  xo-lib 0.11.2) against our server's WebSocket /api/, with the server connected to both
  simulated pools (`lab` fixture);
- xen-api 4.7.6 (XO's XAPI client) against a simulated pool master, over its JSON-RPC and
  XML-RPC transports and its `auto` detection.

Each node script plays one scenario and prints a JSON report; the assertions live here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.migrations.conftest import Lab
from tests.node.conftest import RunScenario
from xen.sim import Simulator

pytestmark = pytest.mark.timeout(120)

ADMIN = {"email": "admin@admin.net", "password": "admin"}


def _steps_done(report: dict[str, Any], *steps: str) -> None:
    assert "error" not in report, report.get("error")
    assert list(steps) == [s for s in report["steps"] if s in steps], report["steps"]


def _assert_xo_error(error: dict[str, Any], code: int, message: str) -> None:
    # The Node clients build a JsonRpcError from {code, message, data}: the code must be an
    # integer and the message a string, or they would not even get here.
    assert error.get("name") == "JsonRpcError", error
    assert error["code"] == code and isinstance(error["code"], int), error
    assert error["message"] == message, error


# -- xo-lib and xo-cli's transport against the server ---------------------------------------


@pytest.mark.parametrize("lib", ["xo-lib", "jsonrpc-websocket-client"])
async def test_xo_clients_sign_in_read_fail_and_migrate(
    lib: str, lab: Lab, run_scenario: RunScenario
) -> None:
    vms_before = await lab.objects(type="VM")
    web01 = await lab.id_of("VM", "web-01")
    a1, a2 = await lab.id_of("host", "a1"), await lab.id_of("host", "a2")
    assert vms_before[web01]["$container"] == a1

    report = await run_scenario(
        "xo_client_scenario.mjs",
        {
            "lib": lib,
            "url": lab.server.base,
            **ADMIN,
            "clientId": f"node-{lib}",
            "throttleMs": lab.server.state.config.auth.throttling_delay_s * 1000 + 50,
            "migrate": {"vm": "web-01", "host": "a2"},
        },
    )
    _steps_done(
        report,
        "open",
        "signedIn",
        "token",
        "tokenSignIn",
        "methodsInfo",
        "getAllObjects",
        "ndjson",
        "errors",
        "migrated",
        "seenMoved",
        "signedOut",
    )

    # Before sign-in: protected methods are refused, unknown ones are not found.
    _assert_xo_error(report["beforeSignIn"], 2, "not enough permissions")
    _assert_xo_error(report["unknownMethod"], -32601, "method not found: no.such.method")
    assert report["unknownMethod"]["data"] == "no.such.method"

    # Sign-in by password (a wrong one first), then by a token from token.create.
    _assert_xo_error(report["badPassword"], 3, "invalid credentials")
    _assert_xo_error(report["tooFast"], -32000, "unknown error from the peer")
    user = report["user"]
    assert user["email"] == ADMIN["email"] and user["permission"] == "admin"
    assert {"id", "groups", "preferences"} <= user.keys()
    assert report["getUser"] == user
    if lib == "xo-lib":
        assert report["eventsA"] == ["authenticationFailure"] * 2 + ["authenticated"]
    assert isinstance(report["token"], str) and report["token"]
    assert report["tokenAgain"] == report["token"]  # same client.id: the token is reused
    assert report["userByToken"]["id"] == user["id"]
    _assert_xo_error(report["tokenTooShort"], -32000, "invalid expiresIn duration: 1000")
    _assert_xo_error(report["badToken"], 3, "invalid credentials")

    # Introspection as xo-cli list-commands reads it.
    info = report["methodsInfo"]
    assert info["count"] > 10
    assert info["signIn"]["permission"] is None
    migrate_params = info["vmMigrate"]["params"]
    assert migrate_params["vm"]["type"] == "string"
    assert migrate_params["force"].get("optional") is True

    # xo.getAllObjects: every VM of both pools, keyed by its UUID, as the server sees them.
    seen = {v["key"]: v for v in report["vms"]}
    assert seen.keys() == vms_before.keys()
    for key, vm in seen.items():
        assert vm["id"] == vm["uuid"] == key and vm["type"] == "VM"
        assert vm["name_label"] == vms_before[key]["name_label"]
        assert vm["$pool"] == vms_before[key]["$pool"]

    ndjson = report["ndjson"]
    assert list(ndjson["getFrom"]) == ["$getFrom"] and ndjson["getFrom"]["$getFrom"].startswith(
        "/api/"
    )
    assert ndjson["status"] == 200 and sorted(ndjson["ids"]) == sorted(vms_before)
    assert ndjson["again"] == 404  # one shot

    # Validation errors: code 10 with Ajv-style errors xo-cli can print.
    _assert_xo_error(report["invalidParams"], 10, "invalid parameters")
    errors = report["invalidParams"]["data"]["errors"]
    assert errors and all(
        isinstance(e["instancePath"], str) and isinstance(e["message"], str) for e in errors
    )
    _assert_xo_error(report["noSuchVm"], 1, "no such VM no-such-vm")

    # The migration: true once done, the move seen by both connections through `all`.
    migrate = report["migrate"]
    assert migrate["vm"] == web01 and migrate["host"] == a2 and migrate["before"] == a1
    assert migrate["result"] is True
    for who in ("seenByA", "seenByB"):
        seen_by = migrate[who]
        assert seen_by["$container"] == a2
        assert seen_by["counts"]["enter"] > 0 and seen_by["counts"]["other"] == 0
        assert seen_by["tasksLeft"] == [] and seen_by["counts"]["exit"] > 0
        assert "Async.VM.pool_migrate" in seen_by["taskLabels"]
    assert (await lab.get(web01))["$container"] == a2

    assert report["signOut"] is True
    _assert_xo_error(report["afterSignOut"], 2, "not enough permissions")


# -- xen-api against the simulator ----------------------------------------------------------


def _db_vms(sim: Simulator, pool: str) -> dict[str, dict[str, Any]]:
    return {rec["uuid"]: rec for rec in sim.pool(pool).db.table("VM").values()}


def _uuid_of(table: dict[str, dict[str, Any]], name: str) -> str:
    return next(rec["uuid"] for rec in table.values() if rec["name_label"] == name)


def _ref_of(table: dict[str, dict[str, Any]], uuid: str) -> str:
    return next(ref for ref, rec in table.items() if rec["uuid"] == uuid)


@pytest.mark.parametrize(
    ("transport", "endpoint"),
    [("auto", "/jsonrpc"), ("json-rpc", "/jsonrpc"), ("xml-rpc", "/xmlrpc")],
)
async def test_xen_api_discovers_watches_and_migrates(
    transport: str, endpoint: str, sim: Simulator, run_scenario: RunScenario
) -> None:
    pool = sim.manifest()["pools"][0]
    db = sim.pool(pool["name"]).db
    hosts = {rec["uuid"]: ref for ref, rec in db.table("host").items()}
    vm_uuid = _uuid_of(db.table("VM"), "web-01")
    target = _uuid_of(db.table("host"), "a2")
    dom0_a1 = next(
        rec["uuid"]
        for rec in db.table("VM").values()
        if rec["is_control_domain"]
        and rec["resident_on"] == hosts[_uuid_of(db.table("host"), "a1")]
    )

    report = await run_scenario(
        "xen_api_scenario.mjs",
        {
            "url": pool["master"].rstrip("/"),
            "user": pool["username"],
            "password": pool["password"],
            "transport": transport,
            "vm": vm_uuid,
            "host": target,
            "badVm": dom0_a1,
        },
    )
    _steps_done(
        report,
        "connected",
        "objectsFetched",
        "badCall",
        "barrier",
        "migrated",
        "seenMoved",
        "badAsync",
    )
    # Every request went to the endpoint of the transport (auto settles on JSON-RPC).
    assert set(report["paths"]) == {endpoint}, report["paths"]

    # Discovery through system.listMethods found the classes; the collection matches the DB.
    assert report["pool"]["uuid"] == pool["uuid"]
    assert {"VM", "host", "task", "pool", "SR", "VDI"} <= set(report["types"])
    assert {v["uuid"] for v in report["vms"]} == set(_db_vms(sim, pool["name"]))
    assert {h["uuid"] for h in report["hosts"]} == set(hosts)

    # Values decoded per transport as XAPI encodes them (xapi.md 1.2 / 1.3).
    types = report["valueTypes"]
    rpc_json = endpoint == "/jsonrpc"
    assert types["memory_static_max"] == ("number" if rpc_json else "string")
    assert types["VCPUs_max"] == ("number" if rpc_json else "string")
    assert types["is_a_template"] == "boolean"
    assert types["start_time"] == ("string" if rpc_json else "Date")
    if rpc_json:
        assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", types["start_time_value"])

    # A write then barrier(): the change came back through event.from on the pool object.
    assert report["barrier"]["name_description"] == "set by xen-api"
    assert db.table("VM")[_ref_of(db.table("VM"), vm_uuid)]["name_description"] == "set by xen-api"

    # A failing call is a XapiError with the XAPI code and params.
    assert report["badCall"]["name"] == "XapiError"
    assert report["badCall"]["code"] == "HANDLE_INVALID"
    assert report["badCall"]["params"][0] == "VM"

    # callAsync(VM.pool_migrate): void task result, the move seen in the client's own objects.
    assert report["migrateResult"] == ""
    assert report["before"]["resident_on"] == hosts[_uuid_of(db.table("host"), "a1")]
    assert report["after"]["resident_on"] == hosts[target]
    assert _db_vms(sim, pool["name"])[vm_uuid]["resident_on"] == hosts[target]

    # A failing task: watchTask rejects with a XapiError built from the task's error_info.
    assert report["badAsync"]["name"] == "XapiError", report["badAsync"]
    assert report["badAsync"]["code"] == "OPERATION_NOT_ALLOWED"

    # The event loop ran without errors and the tasks were destroyed afterwards.
    assert report["watchEventsError"] is None and report["lastEventFetched"]
    assert report["tasksLeft"] == []
    assert not db.table("task")


@pytest.mark.parametrize("transport", ["json-rpc", "xml-rpc"])
async def test_xen_api_cross_pool_migrate_send(
    transport: str, sim: Simulator, run_scenario: RunScenario
) -> None:
    source, target = sim.manifest()["pools"]
    db_a, db_b = sim.pool(source["name"]).db, sim.pool(target["name"]).db
    vm_uuid = _uuid_of(db_a.table("VM"), "web-02")
    b1 = _uuid_of(db_b.table("host"), "b1")
    sr = _uuid_of(db_b.table("SR"), "B local b1")
    network = _uuid_of(db_b.table("network"), "B management")
    member = next(h for h in target["hosts"] if h["address"] not in target["master"])
    credentials = {"user": source["username"], "password": source["password"]}

    report = await run_scenario(
        "xen_api_cross_pool.mjs",
        {
            "transport": transport,
            "source": {"url": source["master"].rstrip("/"), **credentials},
            # A pool member, not the master: the client must follow HOST_IS_SLAVE.
            "target": {
                "url": f"http://{member['address']}:{sim.port}",
                "user": target["username"],
                "password": target["password"],
            },
            "vm": vm_uuid,
            "host": b1,
            "sr": sr,
            "network": network,
            "cancelVm": _uuid_of(db_a.table("VM"), "db-01"),
        },
    )
    _steps_done(
        report,
        "connected",
        "objectsFetched",
        "migrate_receive",
        "assert_can_migrate",
        "migrate_send",
        "seenMoved",
        "cancelled",
    )
    assert f"http://{report['targetHostname']}:{sim.port}/" == target["master"]
    assert {"SM", "host", "master", "session_id", "xenops"} <= set(report["destKeys"])
    assert report["assertResult"] == ""

    # The task result is the VM's ref in the destination pool, decoded from its XML value.
    new_ref = report["migrateResult"]
    assert new_ref.startswith("OpaqueRef:") and db_b.table("VM")[new_ref]["uuid"] == vm_uuid
    assert vm_uuid not in {rec["uuid"] for rec in db_a.table("VM").values()}
    arrived = report["arrived"]
    assert arrived["$ref"] == new_ref and arrived["power_state"] == "Running"
    assert arrived["resident_on"] == _ref_of(db_b.table("host"), b1)
    assert arrived["networks"] == [network]
    assert [v["sr"] for v in arrived["vdis"]] == [sr] * len(report["sourceVdis"])
    assert not {v["uuid"] for v in arrived["vdis"]} & set(report["sourceVdis"])
    assert report["errors"] == [None, None]

    # A cancelled migrate_send: callAsync rejects with promise-toolbox's Cancel, the VM stays.
    cancel = report["cancel"]
    assert 0 < cancel["progressSeen"] < 1
    assert "unexpectedResult" not in cancel, cancel
    assert cancel["error"]["name"] == "Cancel" and cancel["error"]["message"] == "task canceled"
    assert cancel["after"] == {"resident_on": cancel["residentBefore"], "power_state": "Running"}
    assert not cancel["inTarget"]
