"""A signed-in connection from the stored registration, for the commands that need one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from client import registration
from client.connection import Connection, signed_in


@contextlib.asynccontextmanager
async def open_session() -> AsyncIterator[Connection]:
    reg = registration.load_required()
    conn = await signed_in(reg.server, reg.token, allow_unauthorized=reg.allowUnauthorized)
    try:
        yield conn
    finally:
        await conn.close()
