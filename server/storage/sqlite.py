"""The embedded store: one SQLite file in the data dir (server/db.py for users, tokens and pools,
server/migrations/history.py and batch_history.py for migrations and batches).

Statements are small and indexed, so they run on the event loop (sub-millisecond), as they
did before this interface existed: the methods are async only to share it with Redis.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from server.credentials import CredentialCipher
from server.db import Database
from server.migrations.batch_history import BatchHistory
from server.migrations.history import MigrationHistory
from server.storage.base import EmailTaken, MigrationRow, Storage
from server.storage.records import AclRecord, GroupRecord, ServerRecord, TokenRecord, User


class SqliteStorage(Storage):
    kind = "sqlite"

    def __init__(self, path: Path, cipher: CredentialCipher) -> None:
        self.path = path
        self.db = Database(path, cipher)
        self.history = MigrationHistory(path)
        self.batch_history = BatchHistory(path)

    async def close(self) -> None:
        self.batch_history.close()
        self.history.close()
        self.db.close()

    # -- users -------------------------------------------------------------------------------

    async def count_users(self) -> int:
        return self.db.count_users()

    async def add_user(self, user: User) -> None:
        try:
            self.db.add_user(user)
        except sqlite3.IntegrityError:
            existing = self.db.user_by_email(user.email)
            if existing is None:
                raise
            raise EmailTaken(existing.id) from None

    async def user_by_email(self, email: str) -> User | None:
        return self.db.user_by_email(email)

    async def user_by_id(self, user_id: str) -> User | None:
        return self.db.user_by_id(user_id)

    async def all_users(self) -> list[User]:
        return self.db.all_users()

    async def update_user(self, user: User) -> None:
        try:
            self.db.update_user(user)
        except sqlite3.IntegrityError:
            existing = self.db.user_by_email(user.email)
            if existing is None:
                raise
            raise EmailTaken(existing.id) from None

    async def delete_user(self, user_id: str) -> bool:
        return self.db.delete_user(user_id)

    async def user_exists(self, user_id: str) -> bool:
        return self.db.user_exists(user_id)

    # -- groups and ACL entries --------------------------------------------------------------

    async def groups(self) -> list[GroupRecord]:
        return self.db.groups()

    async def add_group(self, group: GroupRecord) -> None:
        self.db.add_group(group)

    async def rename_group(self, group_id: str, name: str) -> None:
        self.db.rename_group(group_id, name)

    async def delete_group(self, group_id: str) -> None:
        self.db.delete_group(group_id)

    async def set_group_users(self, group_id: str, user_ids: list[str]) -> None:
        self.db.set_group_users(group_id, user_ids)

    async def acls(self) -> list[AclRecord]:
        return self.db.acls()

    async def add_acl(self, acl: AclRecord) -> bool:
        return self.db.add_acl(acl)

    async def delete_acls(self, ids: list[str]) -> int:
        return self.db.delete_acls(ids)

    # -- tokens ------------------------------------------------------------------------------

    async def add_token(self, rec: TokenRecord) -> None:
        self.db.add_token(rec)

    async def token(self, token_hash: str) -> TokenRecord | None:
        return self.db.token(token_hash)

    async def tokens_of(self, user_id: str | None = None) -> list[TokenRecord]:
        return self.db.tokens_of(user_id)

    async def count_live_tokens(self, user_id: str, now: float) -> int:
        return self.db.count_live_tokens(user_id, now)

    async def client_token(self, user_id: str, client_id: str) -> TokenRecord | None:
        return self.db.client_token(user_id, client_id)

    async def refresh_token(
        self, token_hash: str, expiration: float, description: str | None
    ) -> None:
        self.db.refresh_token(token_hash, expiration, description)

    async def touch_token(self, token_hash: str, last_uses: dict[str, Any]) -> None:
        self.db.touch_token(token_hash, last_uses)

    async def delete_tokens(self, hashes: list[str]) -> int:
        return self.db.delete_tokens(hashes)

    async def delete_expired_tokens(self, now: float) -> int:
        return self.db.delete_expired_tokens(now)

    # -- servers -----------------------------------------------------------------------------

    async def servers(self) -> list[ServerRecord]:
        return self.db.servers()

    async def server(self, server_id: str) -> ServerRecord | None:
        return self.db.server(server_id)

    async def add_server(self, rec: ServerRecord) -> None:
        self.db.add_server(rec)

    async def update_server(self, rec: ServerRecord) -> None:
        self.db.update_server(rec)

    async def remove_server(self, server_id: str) -> bool:
        return self.db.remove_server(server_id)

    # -- migration history -------------------------------------------------------------------

    async def save_migrations(self, rows: list[MigrationRow]) -> None:
        self.history.save_many(rows)

    async def active_migrations(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return self.history.active()

    async def recent_migrations(self, limit: int) -> list[dict[str, Any]]:
        return self.history.recent(limit)

    async def migration(self, migration_id: str) -> dict[str, Any] | None:
        return self.history.get(migration_id)

    async def prune_migrations(self, keep: int) -> None:
        self.history.prune(keep)

    # -- batches -----------------------------------------------------------------------------

    async def save_batches(self, records: list[dict[str, Any]]) -> None:
        self.batch_history.save_many(records)

    async def active_batches(self) -> list[dict[str, Any]]:
        return self.batch_history.active()

    async def recent_batches(self, limit: int) -> list[dict[str, Any]]:
        return self.batch_history.recent(limit)

    async def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self.batch_history.get(batch_id)

    async def prune_batches(self, keep: int) -> None:
        self.batch_history.prune(keep)
