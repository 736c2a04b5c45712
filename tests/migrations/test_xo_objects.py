"""Our objects are xo-server's: `xo.getAllObjects` on a freshly started default lab, compared
with what the real xo-server 5.207.2 returned for the same lab (the reference dump and its
`compare` tool live in ../shared/reference/xo-objects/, test data we read but never copy)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.migrations.conftest import Lab

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared/reference/xo-objects"

# Values that differ from the reference for a reason, by (type, field): none today.
DOCUMENTED_VALUE_DIFFERENCES: dict[tuple[str, str], str] = {}


def _tool() -> ModuleType:
    path = REFERENCE / "xo_objects.py"
    if not path.exists():
        pytest.skip(f"the xo-server reference objects are not here: {path}")
    spec = importlib.util.spec_from_file_location("xo_objects", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def value_differences(tool: ModuleType, ref: dict[str, Any], got: dict[str, Any]) -> set:
    """(type, field) of every value that differs, as `compare --values` counts them."""
    out = set()
    for key, expected in ref.items():
        if key not in got:
            continue
        a, b = tool._flat(expected), tool._flat(got[key])
        for name, value in a.items():
            if name in b and value != b[name] and name not in tool.VOLATILE:
                if not isinstance(value, dict):
                    out.add((key.split(":", 1)[0], name))
    return out


async def test_objects_match_xo_servers_on_the_default_lab(lab: Lab) -> None:
    tool = _tool()
    golden = tool._load(str(tool.GOLDEN))
    got = tool.normalize(await lab.client.call("xo.getAllObjects", {}))
    # Objects, fields and JSON types: exactly xo-server's (the tool prints what differs).
    assert tool.compare(golden, got, False, None) == 0
    assert value_differences(tool, golden, got) <= DOCUMENTED_VALUE_DIFFERENCES.keys()


async def test_a_migration_leaves_xo_servers_message(lab: Lab) -> None:
    vm = await lab.id_of("VM", "web-01")
    a2 = await lab.id_of("host", "a2")
    assert await lab.migrate("vm.migrate", {"vm": vm, "targetHost": a2}) is True

    async def message() -> dict[str, Any] | None:
        messages = await lab.client.call("xo.getAllObjects", {"filter": {"type": "message"}})
        return next((m for m in messages.values() if m["$object"] == vm), None)

    found = await wait_until(message)
    assert found["name"] == "VM_MIGRATED" and isinstance(found["time"], int)
    assert set(found) == {
        "id",
        "type",
        "uuid",
        "body",
        "name",
        "time",
        "$object",
        "$pool",
        "$poolId",
        "_xapiRef",
    }
