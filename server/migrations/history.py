"""Migration history in SQLite: who migrated what, from where to where, when, and how it ended.

Rows are written when a migration is created and at every status change (not at every
progress tick), in the server's database file, so a restart loses nothing: the record of a
migration that was queued or running when the server stopped is found again at start.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS migrations (
    id TEXT PRIMARY KEY,
    vm TEXT NOT NULL,
    user_id TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    record TEXT NOT NULL,
    request TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS migrations_created ON migrations(created);
CREATE INDEX IF NOT EXISTS migrations_status ON migrations(status);
"""

ACTIVE_STATUSES = ("queued", "running")


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """The server's database file in WAL mode, with `schema` created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


class MigrationHistory:
    def __init__(self, path: Path) -> None:
        self._db = open_database(path, SCHEMA)
        # FULL: a commit is on disk when it returns (power loss included); a few per migration.
        self._db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        self._db.close()

    def save(self, record: dict[str, Any], request: dict[str, Any] | str) -> None:
        self.save_many([(record, request)])

    def save_many(self, rows: list[tuple[dict[str, Any], dict[str, Any] | str]]) -> None:
        """Upsert records in one transaction (one WAL commit for a whole batch). A request
        may come already serialized: it never changes after a migration starts."""
        if not rows:
            return
        params = [
            (
                record["id"],
                record["vm"],
                record.get("user"),
                record["status"],
                record["created"],
                record.get("finished"),
                orjson.dumps(record).decode(),
                request if isinstance(request, str) else json.dumps(request),
            )
            for record, request in rows
        ]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO migrations (id, vm, user_id, status, created, finished, record,"
                " request) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET status=excluded.status,"
                " finished=excluded.finished, record=excluded.record",
                params,
            )

    def active(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(record, request) of migrations that were queued or running at the last stop."""
        rows = self._db.execute(
            "SELECT record, request FROM migrations WHERE status IN (?, ?) ORDER BY created",
            ACTIVE_STATUSES,
        ).fetchall()
        return [(json.loads(r), json.loads(q)) for r, q in rows]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM migrations ORDER BY created DESC LIMIT ?", (limit,)
        ).fetchall()
        return [json.loads(r) for (r,) in rows]

    def get(self, migration_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT record FROM migrations WHERE id = ?", (migration_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def prune(self, keep: int) -> None:
        self._db.execute(
            "DELETE FROM migrations WHERE id IN (SELECT id FROM migrations"
            " WHERE status NOT IN (?, ?) ORDER BY created DESC LIMIT -1 OFFSET ?)",
            (*ACTIVE_STATUSES, keep),
        )
