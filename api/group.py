"""group.*: user groups (xo-server api/group.mjs); the logic lives in server/acls.py.

A group is `{id, name, users}`; its members list it in their `groups` (`session.getUser`,
`user.getAll`), and hold the rights of its ACL entries. Every method is for admins. Unknown
groups and users are `no such group|user <id>` (code 1); a membership change takes effect from
the members' next call, and on what they are pushed. Deleting a group deletes its entries.
"""

from __future__ import annotations

from typing import Any

from api.registry import OPTIONAL, Call, Method, XoParams
from server.users import reload_users


class CreateParams(XoParams):
    name: str


async def create(call: Call, params: CreateParams) -> str:
    return (await call.state.acl.create_group(params.name)).id


class IdParams(XoParams):
    id: str


async def delete(call: Call, params: IdParams) -> None:
    members = await call.state.acl.delete_group(params.id)
    await reload_users(call.state, members)


def get_all(call: Call, params: XoParams) -> list[dict[str, Any]]:
    return [group.public() for group in call.state.acl.groups()]


class SetParams(XoParams):
    id: str
    name: str = OPTIONAL


async def set_(call: Call, params: SetParams) -> None:
    acl = call.state.acl
    acl.group(params.id)  # code 1 when unknown, even without a name
    if params.name is not None:
        await acl.rename_group(params.id, params.name)


class SetUsersParams(XoParams):
    id: str
    userIds: list[str]


async def set_users(call: Call, params: SetUsersParams) -> None:
    changed = await call.state.acl.set_group_users(params.id, params.userIds)
    await reload_users(call.state, changed)


class UserParams(XoParams):
    id: str
    userId: str


async def add_user(call: Call, params: UserParams) -> None:
    await call.state.acl.add_user(params.id, params.userId)
    await reload_users(call.state, [params.userId])


async def remove_user(call: Call, params: UserParams) -> None:
    await call.state.acl.remove_user(params.id, params.userId)
    await reload_users(call.state, [params.userId])


METHODS = [
    Method("group.create", create, CreateParams, "admin", description="creates a new group"),
    Method("group.delete", delete, IdParams, "admin", description="deletes an existing group"),
    Method(
        "group.getAll", get_all, permission="admin", description="returns all the existing group"
    ),
    Method(
        "group.setUsers",
        set_users,
        SetUsersParams,
        "admin",
        description="sets the users belonging to a group",
    ),
    Method("group.addUser", add_user, UserParams, "admin", description="adds a user to a group"),
    Method(
        "group.removeUser",
        remove_user,
        UserParams,
        "admin",
        description="removes a user from a group",
    ),
    Method(
        "group.set",
        set_,
        SetParams,
        "admin",
        description="changes the properties of an existing group",
    ),
]
