"""token.*: authentication tokens (xo-server api/token.mjs)."""

from __future__ import annotations

from typing import Any

from api.registry import OPTIONAL, Call, Method, XoParams


class Client(XoParams):
    id: str


class CreateParams(XoParams):
    description: str = OPTIONAL
    client: Client = OPTIONAL
    expiresIn: float | str = OPTIONAL


def create(call: Call, params: CreateParams) -> str:
    assert call.user is not None  # permission SIGNED_IN
    return call.state.auth.create_token(
        call.user,
        description=params.description,
        client_id=params.client.id if params.client is not None else None,
        expires_in=params.expiresIn,
    )


class DeleteParams(XoParams):
    tokens: list[str] = OPTIONAL
    pattern: dict[str, Any] = OPTIONAL


def delete(call: Call, params: DeleteParams) -> None:
    call.state.auth.delete_tokens(tokens=params.tokens, pattern=params.pattern)


def delete_own(call: Call, params: DeleteParams) -> None:
    assert call.user is not None
    call.state.auth.delete_tokens(
        tokens=params.tokens, pattern=params.pattern, user_id=call.user.id
    )


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
        "token.deleteOwn",
        delete_own,
        DeleteParams,
        description="delete authentication tokens of the current user",
    ),
]
