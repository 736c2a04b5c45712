"""Reference section 10, items 6 (the pipeline part), 7 and 11: validation, resolution, error
mapping, void results, concurrency. Methods under test are declared the way a namespace module
declares them and added to the running server's registry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.registry import OPTIONAL, Call, Method, XoParams
from tests.server.conftest import RunningServer
from tests.server.xo_client import RpcError
from xen.errors import PoolUnavailable, XapiError


class MigrateParams(XoParams):
    """vm.migrate's contract (xo-server-api.md 5.1), to exercise the pipeline with it."""

    vm: str
    targetHost: str
    force: bool = OPTIONAL
    sr: str = OPTIONAL
    mapVdisSrs: dict[str, str] = OPTIONAL
    mapVifsNetworks: dict[str, str] = OPTIONAL
    migrationNetwork: str = OPTIONAL
    bypassAssert: bool = OPTIONAL


class RaiseParams(XoParams):
    code: str
    params: list[str] = OPTIONAL


class IdParams(XoParams):
    id: str


@pytest.fixture
def methods(server: RunningServer) -> dict[str, Any]:
    seen: dict[str, Any] = {"started": asyncio.Event(), "cancelled": asyncio.Event()}
    release = asyncio.Event()
    seen["release"] = release

    async def migrate(call: Call, params: MigrateParams) -> None:
        seen["migrate"] = (params, call.objects)

    def raise_xapi(call: Call, params: RaiseParams) -> None:
        raise XapiError(params.code, params.params or [], call={"method": "VM.x", "params": []})

    def crash(call: Call, params: XoParams) -> None:
        raise KeyError("internal detail")

    def unavailable(call: Call, params: XoParams) -> None:
        raise PoolUnavailable("pool-1", "connecting")

    async def slow(call: Call, params: XoParams) -> str:
        seen["started"].set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            seen["cancelled"].set()
            raise
        return "done"

    def start(call: Call, params: IdParams) -> str:
        return params.id

    registry = server.state.registry
    registry.add(
        Method(
            "test.migrate",
            migrate,
            MigrateParams,
            resolve={
                "vm": ("vm", "VM"),
                "host": ("targetHost", "host"),
                "migrationNetwork": ("migrationNetwork", "network"),
            },
        )
    )
    registry.add(
        Method(
            "test.resolveAny", migrate, MigrateParams, resolve={"vm": ("vm", ("VM", "VM-snapshot"))}
        )
    )
    registry.add(Method("test.raise", raise_xapi, RaiseParams))
    registry.add(Method("test.crash", crash))
    registry.add(Method("test.unavailable", unavailable))
    registry.add(Method("test.slow", slow))
    registry.add(Method("test.start", start, IdParams))
    store = server.state.store
    store.set({"id": "vm1", "type": "VM", "$pool": "p1", "_xapiRef": "OpaqueRef:vm1"})
    store.set({"id": "h1", "type": "host", "$pool": "p1", "_xapiRef": "OpaqueRef:h1"})
    store.set({"id": "p1", "type": "pool", "$pool": "p1", "_xapiRef": "OpaqueRef:p1"})
    store.set({"id": "snap1", "type": "VM-snapshot", "$pool": "p1", "_xapiRef": "OpaqueRef:s1"})
    return seen


async def test_strict_validation_as_ajv_reports_it(connect, methods) -> None:
    client = await connect(signed_in=True)
    cases = [
        # xo-server's old shapes are rejected: no extra keys.
        (
            {"id": "vm1", "host_id": "h1"},
            [
                ("", "required", "must have required property 'vm'"),
                ("", "required", "must have required property 'targetHost'"),
                ("", "additionalProperties", "must NOT have additional properties"),  # id
                ("", "additionalProperties", "must NOT have additional properties"),  # host_id
            ],
        ),
        (
            {"vm": "", "targetHost": "h1"},
            [("/vm", "minLength", "must NOT have fewer than 1 characters")],
        ),
        (
            {"vm": "vm1", "targetHost": "h1", "force": "true"},
            [("/force", "type", "must be boolean")],
        ),
        ({"vm": "vm1", "targetHost": "h1", "force": None}, [("/force", "type", "must be boolean")]),
        ({"vm": "vm1", "targetHost": 3}, [("/targetHost", "type", "must be string")]),
        (
            {"vm": "vm1", "targetHost": "h1", "mapVdisSrs": []},
            [("/mapVdisSrs", "type", "must be object")],
        ),
    ]
    for params, expected in cases:
        response = await client.request("test.migrate", params)
        error = response["error"]
        assert error["code"] == 10 and error["message"] == "invalid parameters"
        got = [(e["instancePath"], e["keyword"], e["message"]) for e in error["data"]["errors"]]
        assert sorted(got) == sorted(expected), params
        for item in error["data"]["errors"]:
            assert list(item) == ["instancePath", "schemaPath", "keyword", "params", "message"]
    response = await client.request(
        "test.migrate", {"vm": "vm1", "targetHost": "h1", "force": "true"}
    )
    assert response["error"]["data"]["errors"][0] == {
        "instancePath": "/force",
        "schemaPath": "#/properties/force/type",
        "keyword": "type",
        "params": {"type": "boolean"},
        "message": "must be boolean",
    }


async def test_resolution_no_such_object_and_success(connect, methods) -> None:
    client = await connect(signed_in=True)
    response = await client.request("test.migrate", {"vm": "nope", "targetHost": "h1"})
    assert response["error"] == {
        "message": "no such VM nope",
        "code": 1,
        "data": {"id": "nope", "type": "VM"},
    }
    # The wrong type is "no such" too.
    response = await client.request("test.migrate", {"vm": "h1", "targetHost": "h1"})
    assert response["error"]["message"] == "no such VM h1"
    response = await client.request("test.migrate", {"vm": "vm1", "targetHost": "vm1"})
    assert response["error"]["message"] == "no such host vm1"
    response = await client.request(
        "test.migrate", {"vm": "vm1", "targetHost": "h1", "migrationNetwork": "n0"}
    )
    assert response["error"]["message"] == "no such network n0"
    response = await client.request("test.resolveAny", {"vm": "x", "targetHost": "h1"})
    assert response["error"]["message"] == "no such VM,VM-snapshot x"
    assert response["error"]["data"]["type"] == ["VM", "VM-snapshot"]
    # Success: void result is `true`; handlers get typed params and resolved objects.
    response = await client.request(
        "test.migrate", {"vm": "vm1", "targetHost": "h1", "force": True}
    )
    assert response["result"] is True
    params, objects = methods["migrate"]
    assert params.force is True and params.sr is None
    assert objects["vm"]["id"] == "vm1" and objects["host"]["id"] == "h1"


async def test_non_admin_needs_rights_on_resolved_objects(
    server: RunningServer, connect, methods
) -> None:
    await server.state.auth.add_user("user@x.net", "pw", "user")
    client = await connect()
    await client.sign_in("user@x.net", "pw")
    response = await client.request("test.migrate", {"vm": "vm1", "targetHost": "h1"})
    assert response["error"] == {
        "message": "not enough permissions",
        "code": 2,
        "data": {"permission": "administrate", "object": {"id": "vm1"}},
    }
    response = await client.request("server.getAll")
    assert response["error"]["data"] == {"permission": "admin", "object": {}}


async def test_id_aliasing_of_the_namespace_param(connect, methods) -> None:
    client = await connect(signed_in=True)
    assert await client.call("test.start", {"test": "abc"}) == "abc"  # `vm.start vm=X` style


@pytest.mark.parametrize(
    ("code", "params", "expected"),
    [
        (
            "VM_BAD_POWER_STATE",
            ["OpaqueRef:vm1", "running", "halted"],
            {
                "message": "VM state is halted but should be running",
                "code": 13,
                "data": {"objectId": "vm1", "expected": "running", "actual": "halted"},
            },
        ),
        (
            "HOST_OFFLINE",
            ["OpaqueRef:h1"],
            {"message": "host offline", "code": 18, "data": {"objectId": "h1"}},
        ),
        (
            "OPERATION_BLOCKED",
            ["OpaqueRef:vm1", "migrate_send"],
            {
                "message": "operation blocked",
                "code": 19,
                "data": {"objectId": "vm1", "code": "migrate_send"},
            },
        ),
        (
            "VM_IS_TEMPLATE",
            ["OpaqueRef:unknown"],
            {"message": "VM is a template", "code": 12, "data": {"objectId": "OpaqueRef:unknown"}},
        ),
        ("NO_HOSTS_AVAILABLE", [], {"message": "no hosts available", "code": 7}),
        (
            "VM_LACKS_FEATURE_SHUTDOWN",
            ["OpaqueRef:vm1"],
            {
                "message": "VM lacks feature shutdown",
                "code": 14,
                "data": {"objectId": "vm1", "feature": "shutdown"},
            },
        ),
        (
            "VM_MISSING_PV_DRIVERS",
            ["OpaqueRef:vm1"],
            {"message": "missing PV drivers", "code": 11, "data": {"objectId": "vm1"}},
        ),
        ("SESSION_AUTHENTICATION_FAILED", [], {"message": "authentication failed", "code": 8}),
    ],
)
async def test_mapped_xapi_errors_for_everyone(
    server, connect, methods, code, params, expected
) -> None:
    await server.state.auth.add_user("u@x.net", "pw", "user")
    admin = await connect(signed_in=True)
    user = await connect()
    await user.sign_in("u@x.net", "pw")
    for client in (admin, user):
        response = await client.request("test.raise", {"code": code, "params": params})
        assert response["error"] == expected
        assert client.frames[-1].startswith('{"error":{"message":')


async def test_unmapped_xapi_errors_admin_sees_code_and_params(server, connect, methods) -> None:
    await server.state.auth.add_user("u2@x.net", "pw", "user")
    admin = await connect(signed_in=True)
    params = {
        "code": "VM_INCOMPATIBLE_WITH_THIS_HOST",
        "params": ["OpaqueRef:vm1", "OpaqueRef:h1", "cpu"],
    }
    error = (await admin.request("test.raise", params))["error"]
    assert error["code"] == -32000
    assert error["message"] == "VM_INCOMPATIBLE_WITH_THIS_HOST(OpaqueRef:vm1, OpaqueRef:h1, cpu)"
    assert error["data"]["code"] == "VM_INCOMPATIBLE_WITH_THIS_HOST"  # xo-web's force-retry key
    assert error["data"]["params"] == ["OpaqueRef:vm1", "OpaqueRef:h1", "cpu"]
    assert error["data"]["call"] == {"method": "VM.x", "params": []}
    assert list(error) == ["code", "data", "message"]
    user = await connect()
    await user.sign_in("u2@x.net", "pw")
    error = (await user.request("test.raise", params))["error"]
    assert error == {"code": -32000, "message": "unknown error from the peer"}


async def test_internal_errors_hidden_from_non_admins(server, connect, methods) -> None:
    await server.state.auth.add_user("u3@x.net", "pw", "user")
    admin = await connect(signed_in=True)
    error = (await admin.request("test.crash"))["error"]
    assert error["code"] == -32000 and "internal detail" in error["message"]
    assert error["data"]["name"] == "KeyError"
    user = await connect()
    await user.sign_in("u3@x.net", "pw")
    assert (await user.request("test.crash"))["error"] == {
        "code": -32000,
        "message": "unknown error from the peer",
    }
    error = (await user.request("test.unavailable"))["error"]
    assert error == {"message": "server unreachable", "code": 9, "data": {"objectId": "pool-1"}}


async def test_requests_on_one_socket_run_concurrently(connect, methods) -> None:
    client = await connect(signed_in=True)
    slow = asyncio.ensure_future(client.call("test.slow"))
    await asyncio.wait_for(methods["started"].wait(), 5)
    # The long call does not block other calls on the same socket.
    for _ in range(5):
        assert await client.call("system.getVersion") == "0.1"
    assert not slow.done()
    methods["release"].set()
    assert await slow == "done"


async def test_closing_the_socket_cancels_its_requests(
    server: RunningServer, connect, methods
) -> None:
    client = await connect(signed_in=True)
    pending = asyncio.ensure_future(client.call("test.slow"))
    await asyncio.wait_for(methods["started"].wait(), 5)
    await client.ws.close()
    await asyncio.wait_for(methods["cancelled"].wait(), 5)
    with pytest.raises((ConnectionError, RpcError)):
        await pending
    await asyncio.sleep(0.05)
    assert not server.state.connections


async def test_void_results_are_true(connect) -> None:
    client = await connect(signed_in=True)
    token = await client.call("token.create")
    response = await client.request("token.delete", {"tokens": [token]})
    assert client.frames[-1] == f'{{"id":{response["id"]},"jsonrpc":"2.0","result":true}}'
    assert await client.call("session.signOut") is True


async def test_reserved_log_param(server: RunningServer, connect) -> None:
    await server.state.auth.add_user("u4@x.net", "pw", "user")
    admin = await connect(signed_in=True)
    assert await admin.call("xo.getAllObjects", {"_log": True}) == {}
    user = await connect()
    await user.sign_in("u4@x.net", "pw")
    error = (await user.request("xo.getAllObjects", {"_log": True}))["error"]
    assert error["code"] == 2 and error["data"]["permission"] == "admin"
