"""mirrorBackup.*: backup mirroring jobs (xo-server api/mirror-backup.mjs). xo-migrate makes no
backups: no jobs."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all_jobs(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [Method("mirrorBackup.getAllJobs", get_all_jobs, permission="admin")]
