"""The data directory at start-up: never run on damaged or vanished state, never silently
start afresh once a database existed.

- `secret.key` is written right after the database is first created, so its presence says a
  database existed: if the database is then missing, empty or damaged (SQLite's
  `quick_check`, our tables), the server refuses to start instead of creating a fresh one
  with `admin` / `admin` (the users, tokens and pools would silently be gone).
- A short or unreadable `secret.key` is refused (server/auth.py).
- The directory is created 0700, the database and secret 0600 (SQLite gives its -wal and -shm
  files the database's mode); a directory the server cannot write to is refused up front.

Every refusal is a `DataDirError` whose message is one line naming the file and what to do;
`xo-migrate serve` prints it and exits with status 1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path

from server.auth import SecretError, load_secret

DB_NAME = "xo-migrate.db"
SECRET_NAME = "secret.key"
_TABLES = ("users", "tokens", "servers")
_START_AFRESH = "or move it away together with secret.key to start afresh (admin/admin)"


class DataDirError(Exception):
    """The data directory cannot be used; the message is one line."""


def prepare(data_dir: Path, db_path: Path | None = None) -> tuple[bytes, bool]:
    """Check the data dir before the database is opened: (the server secret, whether it is
    new and must be written with `keep_secret` once the database is ready). `db_path`: the
    SQLite file (`<data dir>/xo-migrate.db` by default); with Redis there is none here and
    only the secret is checked."""
    key_path = data_dir / SECRET_NAME
    _ensure_writable_dir(data_dir)
    existed = key_path.exists()
    if db_path is None:
        return _secret(key_path, existed)
    if existed and not db_path.exists():
        raise DataDirError(
            f"database {db_path} is missing, but {key_path} shows one existed: restore it"
            f" from a backup, {_START_AFRESH}"
        )
    if db_path.exists():
        check_database(db_path, existed=existed)
    else:
        _create_private(db_path)
    return _secret(key_path, existed)


def _secret(key_path: Path, existed: bool) -> tuple[bytes, bool]:
    if not existed:
        return secrets.token_bytes(32), True
    try:
        return load_secret(key_path), False
    except SecretError as exc:
        raise DataDirError(str(exc)) from None


def keep_secret(data_dir: Path, secret: bytes) -> None:
    """Write a new secret (0600), after the database exists: from now on it must."""
    path = data_dir / SECRET_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise DataDirError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_database(db_path: Path, *, existed: bool) -> None:
    """Raise DataDirError if the database file is not a sound xo-migrate database."""
    size = db_path.stat().st_size
    if size == 0:
        if existed:
            raise DataDirError(
                f"database {db_path} is empty (truncated): restore it from a backup,"
                f" {_START_AFRESH}"
            )
        return  # created by a start that stopped before writing anything: start afresh
    try:
        with open(db_path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise DataDirError(f"cannot read database {db_path}: {exc.strerror or exc}") from None
    if header != b"SQLite format 3\x00":
        raise DataDirError(
            f"database {db_path} is not an SQLite database (damaged): restore it from a"
            f" backup, {_START_AFRESH}"
        )
    try:
        db = sqlite3.connect(db_path)
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        problems = [str(exc)]
        tables = set()
    if problems != ["ok"]:
        # quick_check reports many lines (one per broken page): the first few, on one line.
        detail = "; ".join(" ".join(problems).split("\n"))
        detail = detail.replace("*** in database main ***; ", "")[:160]
        raise DataDirError(
            f"database {db_path} is damaged ({detail}): restore it from a backup, {_START_AFRESH}"
        )
    missing = [t for t in _TABLES if t not in tables]
    if existed and missing:
        raise DataDirError(
            f"database {db_path} has no {missing[0]} table (not xo-migrate's, or damaged):"
            f" restore it from a backup, {_START_AFRESH}"
        )


def _ensure_writable_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Proof by doing: os.access says yes to root on a read-only mount.
        probe = data_dir / f".write-test-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise DataDirError(
            f"data dir {data_dir} is not writable ({exc.strerror or exc}): fix its"
            " permissions, or set data_dir to a writable directory"
        ) from None


def _create_private(db_path: Path) -> None:
    """An empty database file, 0600 before SQLite writes anything into it."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
