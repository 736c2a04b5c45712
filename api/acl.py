"""acl.*: access control lists (xo-server api/acl.mjs), as xo-server answers with none.

xo-migrate has no ACLs yet (a later issue builds them; replace these answers then):
`acl.getCurrentPermissions` is `{}` for every user, which is also xo-server's answer for an
admin (whose rights are not ACLs), and `acl.get` (admins) lists no entry. Without ACLs a
non-admin holds no right on any object, as everywhere else in the API.
"""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_current_permissions(call: Call, params: XoParams) -> dict[str, Any]:
    return {}


def get(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [
    Method(
        "acl.getCurrentPermissions",
        get_current_permissions,
        description="get (explicit) permissions by object for the current user",
    ),
    Method("acl.get", get, permission="admin", description="get existing ACLs"),
]
