"""The storage interface: everything xo-migrate keeps (users, groups, ACL entries, tokens,
pools, migrations, batches), behind one async interface with two
implementations, SQLite (server/storage/sqlite.py, the embedded default) and Redis
(server/storage/redis.py, shared by the instances of a cluster).

Records are the dataclasses of server/db.py (users, tokens, pools) and plain dicts for the
migration and batch history (`Migration.to_xo()`, `Batch.to_record()`).

A write that cannot reach the store raises `StorageUnavailable` and changes nothing; reads
of an implementation that keeps a copy (Redis) are served from it meanwhile.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from server.storage.records import AclRecord, GroupRecord, ServerRecord, TokenRecord, User

# (record, request): the request may come already serialized (it never changes).
MigrationRow = tuple[dict[str, Any], dict[str, Any] | str]

MIGRATION_ACTIVE = ("queued", "running")
BATCH_ACTIVE = ("running", "paused")


class StorageUnavailable(Exception):
    """The store cannot be reached: the write was refused (nothing changed)."""


class EmailTaken(Exception):
    """add_user / update_user: another user has this email (its id is `args[0]`)."""


class Storage(ABC):
    """One store for users, tokens, pools, the migration history and batches."""

    kind: str = ""  # "sqlite" | "redis"
    shared: bool = False  # True: other instances share it (a cluster)

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (Redis); SQLite is open once built."""

    @abstractmethod
    async def close(self) -> None: ...

    @property
    def available(self) -> bool:
        """Writes can be made now (False while Redis is unreachable)."""
        return True

    def check_writable(self) -> None:  # noqa: B027 - SQLite is always writable
        """Raise StorageUnavailable, with the store's own reason, if writes cannot be made now:
        for work that must not start unless it can be recorded."""

    # -- users -------------------------------------------------------------------------------

    @abstractmethod
    async def count_users(self) -> int: ...

    @abstractmethod
    async def add_user(self, user: User) -> None:
        """Raises EmailTaken if another user has its email."""

    @abstractmethod
    async def user_by_email(self, email: str) -> User | None: ...

    @abstractmethod
    async def user_by_id(self, user_id: str) -> User | None: ...

    @abstractmethod
    async def all_users(self) -> list[User]:
        """In creation order."""

    @abstractmethod
    async def update_user(self, user: User) -> None:
        """Raises EmailTaken if the new email belongs to another user."""

    @abstractmethod
    async def delete_user(self, user_id: str) -> bool:
        """The user, its tokens, group memberships and ACL entries; False if there was none."""

    @abstractmethod
    async def user_exists(self, user_id: str) -> bool: ...

    # -- groups and ACL entries (server/acls.py keeps them in memory) ---------------------------

    @abstractmethod
    async def groups(self) -> list[GroupRecord]:
        """In creation order, each with its members in the order they joined."""

    @abstractmethod
    async def add_group(self, group: GroupRecord) -> None: ...

    @abstractmethod
    async def rename_group(self, group_id: str, name: str) -> None: ...

    @abstractmethod
    async def delete_group(self, group_id: str) -> None:
        """The group, its memberships and its ACL entries."""

    @abstractmethod
    async def set_group_users(self, group_id: str, user_ids: list[str]) -> None:
        """Replace the members; those staying keep their place."""

    @abstractmethod
    async def acls(self) -> list[AclRecord]:
        """In creation order."""

    @abstractmethod
    async def add_acl(self, acl: AclRecord) -> bool:
        """False if it was there already."""

    @abstractmethod
    async def delete_acls(self, ids: list[str]) -> int: ...

    # -- tokens (only their SHA-256 is stored) ------------------------------------------------

    @abstractmethod
    async def add_token(self, rec: TokenRecord) -> None: ...

    @abstractmethod
    async def token(self, token_hash: str) -> TokenRecord | None: ...

    @abstractmethod
    async def tokens_of(self, user_id: str | None = None) -> list[TokenRecord]:
        """A user's tokens, or every token with None."""

    @abstractmethod
    async def count_live_tokens(self, user_id: str, now: float) -> int: ...

    @abstractmethod
    async def client_token(self, user_id: str, client_id: str) -> TokenRecord | None:
        """The user's token bound to `client_id` that expires last."""

    @abstractmethod
    async def refresh_token(
        self, token_hash: str, expiration: float, description: str | None
    ) -> None: ...

    @abstractmethod
    async def touch_token(self, token_hash: str, last_uses: dict[str, Any]) -> None: ...

    @abstractmethod
    async def delete_tokens(self, hashes: list[str]) -> int: ...

    @abstractmethod
    async def delete_expired_tokens(self, now: float) -> int: ...

    # -- servers (pools; passwords encrypted at rest) ------------------------------------------

    @abstractmethod
    async def servers(self) -> list[ServerRecord]:
        """In creation order."""

    @abstractmethod
    async def server(self, server_id: str) -> ServerRecord | None: ...

    @abstractmethod
    async def add_server(self, rec: ServerRecord) -> None: ...

    @abstractmethod
    async def update_server(self, rec: ServerRecord) -> None:
        """With `credentials_error` set, the stored password is kept as it is."""

    @abstractmethod
    async def remove_server(self, server_id: str) -> bool: ...

    # -- migration history ---------------------------------------------------------------------

    @abstractmethod
    async def save_migrations(self, rows: list[MigrationRow]) -> None:
        """Upsert records, all or none."""

    @abstractmethod
    async def active_migrations(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(record, request) of the queued and running ones, oldest first."""

    @abstractmethod
    async def recent_migrations(self, limit: int) -> list[dict[str, Any]]:
        """Newest first."""

    @abstractmethod
    async def migration(self, migration_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def prune_migrations(self, keep: int) -> None:
        """Keep the `keep` newest finished records (and every active one)."""

    # -- batches -------------------------------------------------------------------------------

    @abstractmethod
    async def save_batches(self, records: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    async def active_batches(self) -> list[dict[str, Any]]:
        """Running or paused, oldest first."""

    @abstractmethod
    async def recent_batches(self, limit: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def batch(self, batch_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def prune_batches(self, keep: int) -> None: ...
