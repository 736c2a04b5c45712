"""group.*: user groups (xo-server api/group.mjs). xo-migrate has none yet (the ACL issue adds
them): the list is empty."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [
    Method(
        "group.getAll", get_all, permission="admin", description="returns all the existing group"
    ),
]
