"""backupNg.*: backup jobs (xo-server api/backup-ng.mjs). xo-migrate makes no backups: no jobs,
as xo-server answers without any."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all_jobs(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [Method("backupNg.getAllJobs", get_all_jobs, permission="admin")]
