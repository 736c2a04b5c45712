"""resourceSet.*: self-service resource sets (xo-server api/resource-set.mjs). xo-migrate has
none: every user's list is empty."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [
    Method("resourceSet.getAll", get_all, description="Get the list of all existing resource set"),
]
