"""Regenerate `schema.json` from XAPI's machine-readable datamodel.

Usage: python -m xen.sim.schema_gen ../shared/reference/xenapi-datamodel.json

The simulator ships the compact result so that it never depends on files outside the repo.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("schema.json")


def compact(datamodel: list[dict[str, Any]]) -> dict[str, Any]:
    classes: dict[str, Any] = {}
    for cls in datamodel:
        enums = {e["name"]: [v["name"] for v in e["values"]] for e in cls.get("enums", [])}
        fields = [[f["name"], f["type"], f["qualifier"], f.get("default")] for f in cls["fields"]]
        messages = {
            m["name"]: {
                "params": [[p["type"], p["name"]] for p in m["params"]],
                "result": m["result"][0] if m["result"] else "void",
                "implicit": bool(m.get("implicit")),
            }
            for m in cls["messages"]
        }
        classes[cls["name"]] = {"fields": fields, "messages": messages, "enums": enums}
    return {"classes": classes}


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path("../shared/reference/xenapi-datamodel.json")
    data = compact(json.loads(src.read_text()))
    OUT.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(data['classes'])} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
