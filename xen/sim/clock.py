"""The hosts' clocks: `host.get_servertime` (UTC) and `host.get_server_localtime`.

xo-server asks `get_servertime` before every stats request (xapi-stats.mjs) and compares it
with its own clock (host.isHostServerTimeConsistent). Simulated hosts share the machine's
clock, and run in UTC, so both calls give the current time to the second.
"""

from __future__ import annotations

from datetime import datetime

from xen.sim.db import now
from xen.sim.registry import CallContext, message


@message("host.get_servertime")
def get_servertime(ctx: CallContext, host: str) -> datetime:
    ctx.db.get("host", host)  # HANDLE_INVALID for an unknown host
    return now()


@message("host.get_server_localtime")
def get_server_localtime(ctx: CallContext, host: str) -> datetime:
    ctx.db.get("host", host)
    return now()
