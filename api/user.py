"""user.*: user accounts (xo-server api/user.mjs); the logic lives in server/users.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from api.registry import OPTIONAL, Call, Method, XoParams
from server import errors
from server.users import change_password, create_user, delete_user, update_user


def _invalid(message: str) -> errors.XoError:
    """xo-common `invalidParameters(message)`: no Ajv errors, so `data` is `{}` on the wire."""
    return errors.XoError(10, message, {})


# xo-server's values: "user" and "none" are the same level (server/dispatch.py).
Permission = Literal["none", "user", "read", "write", "admin"]
# An email is a name shown everywhere and logged: no control characters (NUL, newlines...).
Email = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$")]


class CreateParams(XoParams):
    email: Email
    password: str
    permission: Permission = OPTIONAL


async def create(call: Call, params: CreateParams) -> str:
    user = await create_user(call.state, params.email, params.password, params.permission or "none")
    return user.id


class IdParams(XoParams):
    id: str


async def delete(call: Call, params: IdParams) -> None:
    assert call.user is not None  # permission "admin"
    if params.id == call.user.id:
        raise _invalid("a user cannot delete itself")
    await delete_user(call.state, params.id, caller=call.caller)


async def get_all(call: Call, params: XoParams) -> list[dict[str, Any]]:
    return [user.public() for user in await call.state.storage.all_users()]


async def get_authentication_tokens(call: Call, params: XoParams) -> list[dict[str, Any]]:
    """The caller's live tokens in xo-server's record shape. xo-server's `id` is the token
    itself, which is never stored here (only its hash): `id` is the record's public id, which
    token.delete, token.deleteOwn and token.set take as xo-web sends it."""
    assert call.user is not None
    out = []
    for rec in await call.state.storage.tokens_of(call.user.id):
        if rec.expired():
            continue
        public = rec.public()
        token: dict[str, Any] = {}
        if "client" in public:
            token["client"] = public["client"]
        token["created_at"] = public["created_at"]
        if rec.description is not None:
            token["description"] = rec.description
        token["id"] = public["id"]
        token["user_id"] = rec.user_id
        token["expiration"] = public["expiration"]
        if rec.last_uses:
            token["last_uses"] = rec.last_uses
        out.append(token)
    return out


class SetParams(XoParams):
    id: str
    email: Email = OPTIONAL
    password: str = OPTIONAL
    permission: Permission = OPTIONAL
    preferences: dict[str, Any] = OPTIONAL


async def set_(call: Call, params: SetParams) -> None:
    me = call.user
    assert me is not None  # permission SIGNED_IN
    if me.is_admin:
        if params.permission and params.id == me.id:
            raise _invalid("a user cannot change its own permission")
    else:
        if params.email or params.password or params.permission:
            # xo-server's message, verbatim; a user changes its password with changePassword.
            raise _invalid("this properties can only changed by an administrator")
        if params.id != me.id:
            # Stricter than xo-server, which lets any user rewrite anyone's preferences.
            raise errors.unauthorized("admin")
    await update_user(
        call.state,
        params.id,
        caller=call.caller,
        email=params.email,
        password=params.password,
        permission=params.permission,
        preferences=params.preferences,
    )


class ChangePasswordParams(XoParams):
    oldPassword: str
    newPassword: str


async def change_password_(call: Call, params: ChangePasswordParams) -> None:
    assert call.user is not None
    await change_password(call.state, call.caller, params.oldPassword, params.newPassword)


METHODS = [
    Method("user.create", create, CreateParams, "admin", description="creates a new user"),
    Method("user.delete", delete, IdParams, "admin", description="deletes an existing user"),
    Method(
        "user.getAll", get_all, permission="admin", description="returns all the existing users"
    ),
    Method(
        "user.getAuthenticationTokens",
        get_authentication_tokens,
        description="returns authentication tokens of the current user",
    ),
    Method("user.set", set_, SetParams, description="changes the properties of an existing user"),
    Method(
        "user.changePassword",
        change_password_,
        ChangePasswordParams,
        description="change password after checking old password (user function)",
    ),
]
