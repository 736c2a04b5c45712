"""Reference section 10, item 8: system.* introspection, derived from the registry."""

from __future__ import annotations

from api.registry import OPTIONAL, Method, XoParams
from tests.server.conftest import RunningServer


async def test_get_methods_info_as_xo_cli_list_commands_calls_it(
    server: RunningServer, connect
) -> None:
    client = await connect()  # no sign-in: permission null
    response = await client.request("system.getMethodsInfo")  # no `params` member
    info = response["result"]
    assert info["session.signIn"] == {"description": "sign in", "params": {}, "permission": None}
    # Signed-in methods have no permission key; admin ones say so.
    assert "permission" not in info["xo.getAllObjects"]
    assert info["xo.getAllObjects"]["params"] == {
        "filter": {"type": ["object", "string"], "optional": True},
        "limit": {"type": "number", "optional": True},
        "ndjson": {"type": "boolean", "optional": True},
    }
    assert info["token.create"]["params"]["client"] == {
        "type": "object",
        "properties": {"id": {"type": "string"}},
        "optional": True,
    }
    assert info["server.add"]["permission"] == "admin"
    assert info["server.add"]["params"]["autoConnect"] == {
        "type": "boolean",
        "optional": True,
        "default": True,
    }
    assert set(info) == set(server.state.registry.names())
    for entry in info.values():
        assert set(entry) <= {"description", "params", "permission"}
        for prop in entry["params"].values():
            assert isinstance(prop.get("type"), str | list)


async def test_vm_migrate_shape_is_derived_like_xo_server(server: RunningServer, connect) -> None:
    """The reference's vm.migrate entry: no description, no permission key."""

    from pydantic import Field

    class MigrateParams(XoParams):
        vm: str
        force: bool = OPTIONAL
        targetHost: str
        sr: str = OPTIONAL
        mapVdisSrs: dict[str, str] = OPTIONAL
        mapVifsNetworks: dict[str, str] = OPTIONAL
        migrationNetwork: str = OPTIONAL
        bypassAssert: bool = Field(
            default=None,
            description="Bypass the verification asserting whether a VM can be migrated to the specified destination",
        )

    server.state.registry.add(Method("example.migrate", lambda call, p: None, MigrateParams))
    client = await connect()
    info = (await client.call("system.getMethodsInfo"))["example.migrate"]
    assert info == {
        "params": {
            "vm": {"type": "string"},
            "force": {"type": "boolean", "optional": True},
            "targetHost": {"type": "string"},
            "sr": {"type": "string", "optional": True},
            "mapVdisSrs": {"type": "object", "optional": True},
            "mapVifsNetworks": {"type": "object", "optional": True},
            "migrationNetwork": {"type": "string", "optional": True},
            "bypassAssert": {
                "description": "Bypass the verification asserting whether a VM can be migrated to the specified destination",
                "optional": True,
                "type": "boolean",
            },
        }
    }


async def test_list_methods_signature_and_versions(server: RunningServer, connect) -> None:
    client = await connect()
    names = await client.call("system.listMethods")
    assert names == server.state.registry.names()
    assert {"session.signIn", "token.create", "xo.getAllObjects", "server.getAll"} <= set(names)
    signature = await client.call("system.methodSignature", {"method": "session.signIn"})
    assert signature == [
        {"name": "session.signIn", "description": "sign in", "params": {}, "permission": None}
    ]
    response = await client.request("system.methodSignature", {"method": "nope"})
    assert response["error"] == {"message": "no such object undefined", "code": 1, "data": {}}
    assert await client.call("system.getVersion") == "0.1"
    version = await client.call("system.getServerVersion")
    assert isinstance(version, str) and version
    await client.sign_in()
    assert isinstance(await client.call("system.getServerTimezone"), str)
