"""The records xo-migrate stores (users, tokens, groups, ACL entries, pools), whatever the
store: SQLite (server/db.py) and Redis (server/storage/redis.py) read and write these."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields
from typing import Any

from xen.config import PoolConfig


@dataclass(slots=True)
class User:
    id: str
    email: str
    pw_hash: str
    permission: str = "none"
    groups: list[str] = field(default_factory=list)
    preferences: dict[str, Any] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.permission == "admin"

    def public(self) -> dict[str, Any]:
        """xo-server's getUserPublicProperties, same key order."""
        return {
            "id": self.id,
            "email": self.email,
            "groups": self.groups,
            "permission": self.permission,
            "preferences": self.preferences,
        }


@dataclass(slots=True)
class TokenRecord:
    hash: str
    user_id: str
    created_at: float  # seconds since the epoch
    expiration: float
    description: str | None
    client_id: str | None
    client_salt: str | None
    last_uses: dict[str, Any]

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expiration

    @property
    def public_id(self) -> str:
        """The record's id on the API, where xo-server shows the token itself (which is not
        stored here): derived from the stored hash, stable, and no credential."""
        return hashlib.sha256(f"token-id\0{self.hash}".encode()).hexdigest()[:40]

    def public(self) -> dict[str, Any]:
        """The record as token.delete patterns see it (never the token itself)."""
        out: dict[str, Any] = {
            "id": self.public_id,
            "user_id": self.user_id,
            "created_at": int(self.created_at * 1000),
            "expiration": int(self.expiration * 1000),
            "description": self.description,
            "last_uses": self.last_uses,
        }
        if self.client_id is not None:
            out["client"] = {"id": self.client_id}
        return out


@dataclass(slots=True)
class GroupRecord:
    id: str
    name: str
    users: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """xo-server's group object (group.getAll)."""
        return {"id": self.id, "name": self.name, "users": list(self.users)}


@dataclass(frozen=True, slots=True)
class AclRecord:
    id: str
    subject: str  # a user or group id
    object: str  # an XO object id
    action: str  # a role id (or a permission)

    def public(self) -> dict[str, Any]:
        """xo-server's ACL entry (acl.get)."""
        return {
            "id": self.id,
            "subject": self.subject,
            "object": self.object,
            "action": self.action,
        }


@dataclass(slots=True)
class ServerRecord:
    id: str
    url: str
    username: str
    password: str
    password_env: str = ""
    label: str = ""
    allow_unauthorized: bool = False
    ca_file: str = ""
    enabled: bool = True
    created_at: float = 0.0
    # Set when the stored password cannot be decrypted (`password` is then ""): the stored
    # value is kept as is until a new password is given.
    credentials_error: str = ""

    def __repr__(self) -> str:  # never leak the password into logs
        return f"ServerRecord(id={self.id!r}, url={self.url!r}, username={self.username!r})"

    # A stored pool is a PoolConfig plus `created_at`: the conversions copy fields by name.

    @classmethod
    def from_pool_config(cls, cfg: PoolConfig) -> ServerRecord:
        return cls(**{name: getattr(cfg, name) for name in _POOL_CONFIG_FIELDS})

    def to_pool_config(self) -> PoolConfig:
        return PoolConfig(**{name: getattr(self, name) for name in _POOL_CONFIG_FIELDS})


_POOL_CONFIG_FIELDS = tuple(f.name for f in fields(PoolConfig))
