"""Batches in SQLite, in the migration history's database file: a batch that was running or
paused when the server stopped is found again at start and resumed (server/migrations/
batches.py). Rows are written when a batch is created and when it or one of its moves changes
status (not at every progress tick)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from server.migrations.history import open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS migration_batches (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS migration_batches_created ON migration_batches(created);
CREATE INDEX IF NOT EXISTS migration_batches_status ON migration_batches(status);
"""

ACTIVE_STATUSES = ("running", "paused")


class BatchHistory:
    def __init__(self, path: Path) -> None:
        self._db = open_database(path, SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save_many(self, records: list[dict[str, Any]]) -> None:
        """Upsert batch records (`Batch.to_record()`) in one transaction."""
        if not records:
            return
        params = [
            (r["id"], r["status"], r["created"], r.get("finished"), orjson.dumps(r).decode())
            for r in records
        ]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO migration_batches (id, status, created, finished, record)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status=excluded.status,"
                " finished=excluded.finished, record=excluded.record",
                params,
            )

    def active(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM migration_batches WHERE status IN (?, ?) ORDER BY created",
            ACTIVE_STATUSES,
        ).fetchall()
        return [orjson.loads(r) for (r,) in rows]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM migration_batches ORDER BY created DESC LIMIT ?", (limit,)
        ).fetchall()
        return [orjson.loads(r) for (r,) in rows]

    def get(self, batch_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT record FROM migration_batches WHERE id = ?", (batch_id,)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def prune(self, keep: int) -> None:
        self._db.execute(
            "DELETE FROM migration_batches WHERE id IN (SELECT id FROM migration_batches"
            " WHERE status NOT IN (?, ?) ORDER BY created DESC LIMIT -1 OFFSET ?)",
            (*ACTIVE_STATUSES, keep),
        )
