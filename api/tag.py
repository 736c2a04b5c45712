"""tag.*: tag configurations, i.e. colours (xo-server api/tag.mjs). None is configured in
xo-migrate; the answer is xo-server's list of `{id, color}` records, empty."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all_configured(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [
    Method("tag.getAllConfigured", get_all_configured, description="Get all configured tags"),
]
