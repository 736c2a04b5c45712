"""ipPool.*: pools of IP addresses for VIFs (xo-server api/ip-pool.mjs). xo-migrate has none:
every user's list is empty (an admin may ask for another user's, `userId`)."""

from __future__ import annotations

from typing import Any

from api.registry import OPTIONAL, Call, Method, XoParams


class GetAllParams(XoParams):
    userId: str = OPTIONAL


def get_all(call: Call, params: GetAllParams) -> list[Any]:
    return []


METHODS = [Method("ipPool.getAll", get_all, GetAllParams, description="List all ipPools")]
