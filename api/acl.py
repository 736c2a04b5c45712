"""acl.*: access control lists (xo-server api/acl.mjs); the logic lives in server/acls.py.

An entry `{id, subject, object, action}` gives a user or group (`subject`) a role (`action`:
viewer, operator, admin) on an object and on what it contains. `acl.add` of an existing entry
changes nothing; `acl.remove` of a missing one is not an error either (xo-server). Both take
effect from the next call of the users concerned, and on what they are pushed.

Beyond xo-server: `acl.add` refuses a subject that is neither a user nor a group (code 1) and
an action that is neither a role nor a permission (code 10), which xo-server stores as is and
never matches; the object need not be connected now (a pool may be away).
"""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_current_permissions(call: Call, params: XoParams) -> dict[str, Any]:
    """The caller's explicit permissions (its own entries and its groups'), object id ->
    {permission: true}; `{}` for an admin without entries, as xo-server."""
    assert call.user is not None  # signed in
    return call.state.acl.permissions_of(call.user.id)


def get(call: Call, params: XoParams) -> list[dict[str, Any]]:
    return [acl.public() for acl in call.state.acl.entries()]


class EntryParams(XoParams):
    subject: str
    object: str
    action: str


async def add(call: Call, params: EntryParams) -> None:
    await call.state.acl.add(params.subject, params.object, params.action)


async def remove(call: Call, params: EntryParams) -> None:
    await call.state.acl.remove(params.subject, params.object, params.action)


METHODS = [
    Method(
        "acl.getCurrentPermissions",
        get_current_permissions,
        description="get (explicit) permissions by object for the current user",
    ),
    Method("acl.get", get, permission="admin", description="get existing ACLs"),
    Method("acl.add", add, EntryParams, "admin", description="add a new ACL entry"),
    Method("acl.remove", remove, EntryParams, "admin", description="remove an existing ACL entry"),
]
