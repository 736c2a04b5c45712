"""schedule.*: job schedules (xo-server api/schedule.mjs). xo-migrate schedules no jobs."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [
    Method(
        "schedule.getAll", get_all, permission="admin", description="Gets all existing schedules"
    ),
]
