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

# What differs from the reference for a documented reason, by (type, field). The reference
# was taken before the simulator had these data; xo-server derives them the same way from
# the data the simulator has now (a value, where the reference shows null).
DOCUMENTED_TYPE_DIFFERENCES: dict[tuple[str, str], str] = {
    ("host", "startTime"): "hosts now have other_config.boot_time",
    ("host", "license_expiry"): "license_params now has an expiry",
}
DOCUMENTED_VALUE_DIFFERENCES: dict[tuple[str, str], str] = {
    ("PIF", "carrier"): "PIFs now have PIF_metrics (carrier true)",
    ("host", "certificates"): "hosts now have Certificate records",
    ("host", "iscsiIqn"): "hosts now have an iscsi_iqn",
    ("pool", "cpus.cores"): "pool.cpu_info now sums its hosts' CPUs (feature levelling)",
    ("pool", "cpus.sockets"): "pool.cpu_info now sums its hosts' sockets",
}


def _tool() -> ModuleType:
    path = REFERENCE / "xo_objects.py"
    if not path.exists():
        pytest.skip(f"the xo-server reference objects are not here: {path}")
    spec = importlib.util.spec_from_file_location("xo_objects", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def differences(tool: ModuleType, ref: dict[str, Any], got: dict[str, Any]) -> dict[str, set]:
    """What `compare --values` reports, by kind, as sets of (type, field)."""
    out: dict[str, set] = {"objects": set(), "fields": set(), "types": set(), "values": set()}
    for key, expected in ref.items():
        xo_type = key.split(":", 1)[0]
        if key not in got:
            out["objects"].add((xo_type, key))
            continue
        a, b = tool._flat(expected), tool._flat(got[key])
        for name, value in a.items():
            if name not in b:
                out["fields"].add((xo_type, name))
            elif tool._jtype(value) != tool._jtype(b[name]):
                out["types"].add((xo_type, name))
            elif value != b[name] and name not in tool.VOLATILE and not isinstance(value, dict):
                out["values"].add((xo_type, name))
    return out


async def test_objects_match_xo_servers_on_the_default_lab(lab: Lab) -> None:
    tool = _tool()
    golden = tool._load(str(tool.GOLDEN))
    got = tool.normalize(await lab.client.call("xo.getAllObjects", {}))
    tool.compare(golden, got, True, None)  # printed: what a failure shows
    found = differences(tool, golden, got)
    assert found["objects"] == found["fields"] == set()
    assert found["types"] <= DOCUMENTED_TYPE_DIFFERENCES.keys()
    assert found["values"] <= DOCUMENTED_VALUE_DIFFERENCES.keys()


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
