"""Reaching the XAPI pool of a resolved object, for the methods that ask XAPI (not a namespace:
shared by api/host.py, api/pool.py, api/vm.py)."""

from __future__ import annotations

from typing import Any

from api.registry import Call
from xen.errors import PoolUnavailable
from xen.pool import PoolConnection


def connection_of(call: Call, obj: dict[str, Any]) -> PoolConnection:
    """The connection of the pool `obj` belongs to; PoolUnavailable when not connected."""
    pool_id = obj.get("$pool") or ""
    pools = call.state.pools
    conn = pools.connection_for_pool(pool_id) if pools is not None else None
    if conn is None:
        raise PoolUnavailable(pool_id, "not connected")
    return conn


def plugin_answer_or_none(exc: Exception) -> bool:
    """xo-server answers null when a host plugin or its function does not exist."""
    code = getattr(exc, "code", None)
    return code in ("XENAPI_MISSING_PLUGIN", "UNKNOWN_XENAPI_PLUGIN_FUNCTION")
