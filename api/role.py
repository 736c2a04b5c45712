"""role.*: the roles an ACL entry grants (xo-server api/role.mjs and the acls mixin): xo-server's
three fixed roles, each with the object permissions it holds (server/acls.py)."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams
from server.acls import ROLES


def get_all(call: Call, params: XoParams) -> list[dict[str, Any]]:
    return [{"id": i, "name": name, "permissions": list(perms)} for i, name, perms in ROLES]


METHODS = [
    Method("role.getAll", get_all, description="Returns the list of all existing roles"),
]
