"""metadataBackup.*: pool and XO metadata backup jobs (xo-server api/metadata-backup.mjs).
xo-migrate makes no backups: no jobs."""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams


def get_all_jobs(call: Call, params: XoParams) -> list[Any]:
    return []


METHODS = [Method("metadataBackup.getAllJobs", get_all_jobs, permission="admin")]
