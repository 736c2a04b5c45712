"""acl.*: the permissions xo-web asks for at start (xo-server api/acl.mjs).

xo-migrate has no ACLs yet, so every user's explicit permissions are none: `{}`, which is also
xo-server's answer for an admin (whose rights are not ACLs). Without ACLs a non-admin holds no
right on any object, as everywhere else in the API.
"""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_current_permissions(call: Call, params: XoParams) -> dict[str, Any]:
    return {}


METHODS = [
    Method(
        "acl.getCurrentPermissions",
        get_current_permissions,
        description="get (explicit) permissions by object for the current user",
    ),
]
