"""proxy.*: XO proxies (xo-server api/proxy.mjs). xo-migrate deploys none: the list is empty."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [Method("proxy.getAll", get_all, permission="admin")]
