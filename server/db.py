"""SQLite persistence: users, authentication tokens, pools ("servers"), groups and ACLs.

One file, `<data dir>/xo-migrate.db`, WAL mode. Statements are small and indexed, so they run on
the event loop thread (sub-millisecond); the expensive part of a sign-in, password hashing,
runs in a worker thread (server/auth.py).

Tokens are stored only as their SHA-256 (`hash`), never in clear. Pool passwords
(`servers.password`) are stored encrypted (server/credentials.py); clear ones left by older
versions are encrypted when the database is opened.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.credentials import CredentialCipher, CredentialsUnreadable
from server.storage.records import (
    AclRecord,
    GroupRecord,
    ServerRecord,
    TokenRecord,
    User,
)

log = logging.getLogger("xo_migrate.db")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    pw_hash TEXT NOT NULL,
    permission TEXT NOT NULL DEFAULT 'none',
    groups TEXT NOT NULL DEFAULT '[]',
    preferences TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expiration REAL NOT NULL,
    description TEXT,
    client_id TEXT,
    client_salt TEXT,
    last_uses TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_id);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_users (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS group_users_user ON group_users(user_id);
CREATE TABLE IF NOT EXISTS acls (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    object TEXT NOT NULL,
    action TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS acls_subject ON acls(subject);
CREATE INDEX IF NOT EXISTS acls_object ON acls(object);
CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    password_env TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    allow_unauthorized INTEGER NOT NULL DEFAULT 0,
    ca_file TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
"""


class Database:
    def __init__(self, path: Path, cipher: CredentialCipher) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._cipher = cipher
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._encrypt_clear_passwords()

    def _encrypt_clear_passwords(self) -> None:
        """Encrypt the clear passwords of older versions, and scrub them from the file."""
        rows = self._db.execute("SELECT id, password FROM servers WHERE password != ''").fetchall()
        clear = [(sid, pw) for sid, pw in rows if not self._cipher.is_encrypted(pw)]
        if not clear:
            return
        # secure_delete zeroes the old cell contents; the checkpoint then rewrites the pages
        # in the main file and empties the WAL, so no copy of the clear text is left behind.
        self._db.execute("PRAGMA secure_delete=ON")
        with self._db:
            for sid, password in clear:
                self._db.execute(
                    "UPDATE servers SET password = ? WHERE id = ?",
                    (self._cipher.encrypt(password), sid),
                )
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("event=credentials_encrypted servers=%d", len(clear))

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction (the connection autocommits each statement otherwise)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- users -------------------------------------------------------------------------------

    def count_users(self) -> int:
        return self._db.execute("SELECT count(*) FROM users").fetchone()[0]

    def add_user(self, user: User) -> None:
        self._db.execute(
            "INSERT INTO users (id, email, pw_hash, permission, preferences) VALUES (?, ?, ?, ?, ?)",
            (user.id, user.email, user.pw_hash, user.permission, json.dumps(user.preferences)),
        )

    def user_by_email(self, email: str) -> User | None:
        row = self._db.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
        return self._user(row, self._groups_of_users(row[0] if row else None))

    def user_by_id(self, user_id: str) -> User | None:
        row = self._db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return self._user(row, self._groups_of_users(user_id if row else None))

    def all_users(self) -> list[User]:
        rows = self._db.execute("SELECT * FROM users ORDER BY rowid").fetchall()
        groups = self._groups_of_users()
        return [u for u in (self._user(r, groups) for r in rows) if u is not None]

    def user_exists(self, user_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is not None
        )

    def _groups_of_users(self, user_id: str | None = "") -> dict[str, list[str]]:
        """user id -> its group ids, in the order it joined them; "" for every user."""
        if user_id is None:
            return {}
        sql = "SELECT user_id, group_id FROM group_users"
        args: tuple[str, ...] = ()
        if user_id:
            sql, args = sql + " WHERE user_id = ?", (user_id,)
        out: dict[str, list[str]] = {}
        for uid, gid in self._db.execute(sql + " ORDER BY rowid", args):
            out.setdefault(uid, []).append(gid)
        return out

    def update_user(self, user: User) -> None:
        self._db.execute(
            "UPDATE users SET email = ?, pw_hash = ?, permission = ?, preferences = ? WHERE id = ?",
            (user.email, user.pw_hash, user.permission, json.dumps(user.preferences), user.id),
        )

    def delete_user(self, user_id: str) -> bool:
        """Delete a user; its tokens and group memberships go with it (ON DELETE CASCADE), and
        its ACL entries too."""
        with self._transaction():
            self._db.execute("DELETE FROM acls WHERE subject = ?", (user_id,))
            return self._db.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount > 0

    @staticmethod
    def _user(row: tuple[Any, ...] | None, groups: dict[str, list[str]]) -> User | None:
        if row is None:
            return None
        # The `groups` column of older versions is unused: group_users is the membership.
        uid, email, pw_hash, permission, _groups, prefs = row
        return User(uid, email, pw_hash, permission, groups.get(uid, []), json.loads(prefs))

    # -- groups ------------------------------------------------------------------------------

    def groups(self) -> list[GroupRecord]:
        members = self._users_of_groups()
        rows = self._db.execute("SELECT id, name FROM groups ORDER BY rowid").fetchall()
        return [GroupRecord(gid, name, members.get(gid, [])) for gid, name in rows]

    def _users_of_groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for gid, uid in self._db.execute(
            "SELECT group_id, user_id FROM group_users ORDER BY rowid"
        ):
            out.setdefault(gid, []).append(uid)
        return out

    def add_group(self, group: GroupRecord) -> None:
        self._db.execute(
            "INSERT INTO groups (id, name, created_at) VALUES (?, ?, ?)",
            (group.id, group.name, time.time()),
        )

    def rename_group(self, group_id: str, name: str) -> None:
        self._db.execute("UPDATE groups SET name = ? WHERE id = ?", (name, group_id))

    def delete_group(self, group_id: str) -> None:
        """The group, its memberships (ON DELETE CASCADE) and its ACL entries."""
        with self._transaction():
            self._db.execute("DELETE FROM acls WHERE subject = ?", (group_id,))
            self._db.execute("DELETE FROM groups WHERE id = ?", (group_id,))

    def set_group_users(self, group_id: str, user_ids: list[str]) -> None:
        """Replace the members; those staying keep their place (and join order)."""
        with self._transaction():
            current = [
                uid
                for (uid,) in self._db.execute(
                    "SELECT user_id FROM group_users WHERE group_id = ? ORDER BY rowid",
                    (group_id,),
                )
            ]
            wanted = set(user_ids)
            for uid in current:
                if uid not in wanted:
                    self._db.execute(
                        "DELETE FROM group_users WHERE group_id = ? AND user_id = ?",
                        (group_id, uid),
                    )
            for uid in user_ids:
                self._db.execute(
                    "INSERT OR IGNORE INTO group_users (group_id, user_id) VALUES (?, ?)",
                    (group_id, uid),
                )

    # -- ACL entries -------------------------------------------------------------------------

    def acls(self) -> list[AclRecord]:
        rows = self._db.execute(
            "SELECT id, subject, object, action FROM acls ORDER BY rowid"
        ).fetchall()
        return [AclRecord(*row) for row in rows]

    def add_acl(self, acl: AclRecord) -> bool:
        """False if the entry was already there (adding it again is not an error)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO acls (id, subject, object, action, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (acl.id, acl.subject, acl.object, acl.action, time.time()),
        )
        return cursor.rowcount > 0

    def delete_acls(self, ids: list[str]) -> int:
        with self._transaction():
            return sum(
                self._db.execute("DELETE FROM acls WHERE id = ?", (i,)).rowcount for i in ids
            )

    # -- tokens ------------------------------------------------------------------------------

    def add_token(self, rec: TokenRecord) -> None:
        self._db.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.hash,
                rec.user_id,
                rec.created_at,
                rec.expiration,
                rec.description,
                rec.client_id,
                rec.client_salt,
                json.dumps(rec.last_uses),
            ),
        )

    def token(self, token_hash: str) -> TokenRecord | None:
        row = self._db.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
        return None if row is None else self._token(row)

    def tokens_of(self, user_id: str | None = None) -> list[TokenRecord]:
        if user_id is None:
            rows = self._db.execute("SELECT * FROM tokens").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM tokens WHERE user_id = ?", (user_id,)).fetchall()
        return [self._token(r) for r in rows]

    def count_live_tokens(self, user_id: str, now: float) -> int:
        return self._db.execute(
            "SELECT count(*) FROM tokens WHERE user_id = ? AND expiration > ?", (user_id, now)
        ).fetchone()[0]

    def client_token(self, user_id: str, client_id: str) -> TokenRecord | None:
        row = self._db.execute(
            "SELECT * FROM tokens WHERE user_id = ? AND client_id = ? ORDER BY expiration DESC",
            (user_id, client_id),
        ).fetchone()
        return None if row is None else self._token(row)

    def refresh_token(self, token_hash: str, expiration: float, description: str | None) -> None:
        self._db.execute(
            "UPDATE tokens SET expiration = ?, description = ? WHERE hash = ?",
            (expiration, description, token_hash),
        )

    def touch_token(self, token_hash: str, last_uses: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE tokens SET last_uses = ? WHERE hash = ?", (json.dumps(last_uses), token_hash)
        )

    def delete_tokens(self, hashes: list[str]) -> int:
        with self._db:  # one transaction
            count = 0
            for h in hashes:
                count += self._db.execute("DELETE FROM tokens WHERE hash = ?", (h,)).rowcount
        return count

    def delete_expired_tokens(self, now: float) -> int:
        return self._db.execute("DELETE FROM tokens WHERE expiration <= ?", (now,)).rowcount

    @staticmethod
    def _token(row: tuple[Any, ...]) -> TokenRecord:
        h, uid, created, exp, desc, client_id, salt, last_uses = row
        return TokenRecord(h, uid, created, exp, desc, client_id, salt, json.loads(last_uses))

    # -- servers (pools) ---------------------------------------------------------------------

    def servers(self) -> list[ServerRecord]:
        rows = self._db.execute("SELECT * FROM servers ORDER BY created_at").fetchall()
        return [self._server(r) for r in rows]

    def server(self, server_id: str) -> ServerRecord | None:
        row = self._db.execute("SELECT * FROM servers WHERE id = ?", (server_id,)).fetchone()
        return None if row is None else self._server(row)

    def add_server(self, rec: ServerRecord) -> None:
        self._db.execute(
            "INSERT INTO servers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.id,
                rec.url,
                rec.username,
                self._cipher.encrypt(rec.password),
                rec.password_env,
                rec.label,
                int(rec.allow_unauthorized),
                rec.ca_file,
                int(rec.enabled),
                rec.created_at or time.time(),
            ),
        )

    def update_server(self, rec: ServerRecord) -> None:
        password_args: tuple[str, ...]
        if rec.credentials_error:
            # The password is unknown: keep the stored one (the old key may come back).
            password_sql, password_args = "", ()
        else:
            password_sql, password_args = " password = ?,", (self._cipher.encrypt(rec.password),)
        self._db.execute(
            f"UPDATE servers SET url = ?, username = ?,{password_sql} password_env = ?,"
            " label = ?, allow_unauthorized = ?, ca_file = ?, enabled = ? WHERE id = ?",
            (
                rec.url,
                rec.username,
                *password_args,
                rec.password_env,
                rec.label,
                int(rec.allow_unauthorized),
                rec.ca_file,
                int(rec.enabled),
                rec.id,
            ),
        )

    def remove_server(self, server_id: str) -> bool:
        return self._db.execute("DELETE FROM servers WHERE id = ?", (server_id,)).rowcount > 0

    def _server(self, row: tuple[Any, ...]) -> ServerRecord:
        sid, url, username, stored, pw_env, label, unauth, ca, enabled, created = row
        rec = ServerRecord(
            sid, url, username, "", pw_env, label, bool(unauth), ca, bool(enabled), created
        )
        try:
            rec.password = self._cipher.decrypt(stored)
        except CredentialsUnreadable as exc:
            rec.credentials_error = str(exc)
        return rec
