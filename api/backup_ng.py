"""backupNg.*: backup jobs and their logs (xo-server api/backup-ng.mjs). xo-migrate makes no
backups: no jobs, and no logs (an object keyed by log id, or with `ndjson` a `$getFrom` URL
serving one log per line: none)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.registry import OPTIONAL, Call, Method, XoParams


def get_all_jobs(call: Call, params: XoParams) -> list[Any]:
    return []


class GetAllLogsParams(XoParams):
    ndjson: bool = OPTIONAL


async def _no_logs(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"", content_type="application/json")


def get_all_logs(call: Call, params: GetAllLogsParams) -> Any:
    if params.ndjson:
        return {"$getFrom": call.state.oneshot.register(_no_logs, ".ndjson")}
    return {}


METHODS = [
    Method("backupNg.getAllJobs", get_all_jobs, permission="admin"),
    Method("backupNg.getAllLogs", get_all_logs, GetAllLogsParams, permission="admin"),
]
