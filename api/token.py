"""token.*: authentication tokens (xo-server api/token.mjs)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.registry import OPTIONAL, Call, Method, XoParams
from server.users import revoke_tokens


class Client(XoParams):
    id: str


class CreateParams(XoParams):
    description: str = OPTIONAL
    client: Client = OPTIONAL
    expiresIn: float | str = OPTIONAL


async def create(call: Call, params: CreateParams) -> str:
    assert call.user is not None  # permission SIGNED_IN
    return await call.state.auth.create_token(
        call.user,
        description=params.description,
        client_id=params.client.id if params.client is not None else None,
        expires_in=params.expiresIn,
    )


class DeleteParams(XoParams):
    tokens: list[str] = OPTIONAL
    pattern: dict[str, Any] = OPTIONAL


# Both close the connections signed in with a deleted token (server/users.py).


async def delete(call: Call, params: DeleteParams) -> None:
    await revoke_tokens(
        call.state, tokens=params.tokens, pattern=params.pattern, user_id=None, caller=call.caller
    )


async def delete_own(call: Call, params: DeleteParams) -> None:
    assert call.user is not None
    await revoke_tokens(
        call.state,
        tokens=params.tokens,
        pattern=params.pattern,
        user_id=call.user.id,
        caller=call.caller,
    )


class SetParams(XoParams):
    # xo-server: `{type: ['null', 'string'], minLength: 0}`; null removes the description.
    model_config = XoParams.model_config | {"str_min_length": 0}
    description: str | None = OPTIONAL
    id: str = Field(min_length=1)


async def set_(call: Call, params: SetParams) -> None:
    assert call.user is not None
    auth = call.state.auth
    rec = await auth.token_of(call.user.id, params.id)
    if "description" in params.model_fields_set:  # absent: unchanged; null: removed
        await auth.set_token_description(rec, params.description)


METHODS = [
    Method("token.create", create, CreateParams, description="create a new authentication token"),
    Method(
        "token.delete",
        delete,
        DeleteParams,
        "admin",
        description="delete authentication tokens, by token or by record pattern",
    ),
    Method(
        "token.set",
        set_,
        SetParams,
        description="changes the properties of an existing token",
    ),
    Method(
        "token.deleteOwn",
        delete_own,
        DeleteParams,
        description="delete authentication tokens of the current user",
    ),
]
