"""plugin.*: xo-server plugins (xo-server api/plugin.mjs). xo-migrate loads none: the list of
installed plugins is empty."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [
    Method(
        "plugin.get", get, permission="admin", description="returns a list of all installed plugins"
    ),
]
