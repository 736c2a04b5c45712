"""session.*: sign in and out of the current connection (xo-server api/session.mjs)."""

from __future__ import annotations

from typing import Any

from api.registry import PUBLIC, Call, Method, XoParams
from server.auth import token_hash


async def sign_in(call: Call, params: Any) -> dict[str, Any]:
    # No params validation, as xo-server: any object goes to the authenticator as is.
    user, expiration = await call.state.auth.sign_in(params, call.caller.remote)
    token = params.get("token") if isinstance(params, dict) else None
    # Remember which token signed in (its hash), so deleting that token closes this connection.
    call.caller.sign_in(user, expiration, token_hash(token) if isinstance(token, str) else None)
    return user.public()


class PasswordParams(XoParams):
    email: str
    password: str


async def sign_in_with_password(call: Call, params: PasswordParams) -> dict[str, Any]:
    return await sign_in(call, {"email": params.email, "password": params.password})


class TokenParams(XoParams):
    token: str


async def sign_in_with_token(call: Call, params: TokenParams) -> dict[str, Any]:
    return await sign_in(call, {"token": params.token})


def sign_out(call: Call, params: XoParams) -> None:
    call.caller.sign_out()


def get_user(call: Call, params: XoParams) -> dict[str, Any]:
    user = call.user
    if user is None:
        # xo-server dereferences the missing user: a plain error, `unknown error from the peer`.
        raise RuntimeError("not signed in")
    return user.public()


METHODS = [
    Method("session.signIn", sign_in, None, PUBLIC, description="sign in"),
    Method(
        "session.signInWithPassword",
        sign_in_with_password,
        PasswordParams,
        PUBLIC,
        description="sign in (deprecated, use session.signIn)",
    ),
    Method(
        "session.signInWithToken",
        sign_in_with_token,
        TokenParams,
        PUBLIC,
        description="sign in (deprecated, use session.signIn)",
    ),
    Method(
        "session.signOut",
        sign_out,
        description="sign out the user from the current session",
    ),
    Method(
        "session.getUser",
        get_user,
        permission=PUBLIC,
        description="return the currently connected user",
    ),
]
