"""Where xo-migrate keeps its state: `[database] url` picks the store.

- no url, or `sqlite:///<path>`: SQLite (server/storage/sqlite.py), the embedded default, in
  `<data dir>/xo-migrate.db` unless the path says otherwise;
- `redis://host:port/db`: Redis (server/storage/redis.py), which several instances share
  (a cluster, server/cluster/).

Both implement server/storage/base.py's `Storage`; the same tests run against both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from server.storage.base import EmailTaken, Storage, StorageUnavailable

__all__ = [
    "DatabaseSettings",
    "EmailTaken",
    "Storage",
    "StorageUnavailable",
    "parse_database_url",
    "sqlite_path",
]

SQLITE_NAME = "xo-migrate.db"


@dataclass(slots=True)
class DatabaseSettings:
    url: str = ""  # "" | sqlite:///<path> | redis://host:port/db
    lease_ttl_s: float = 5.0  # a migration's owner lease (cluster), renewed at a third of it

    @property
    def kind(self) -> str:
        return parse_database_url(self.url)


def parse_database_url(url: str) -> str:
    """ "sqlite" or "redis"; raises ValueError (the message names the problem)."""
    if not url:
        return "sqlite"
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise ValueError(f"url {url!r}: expected sqlite:///<path>")
        return "sqlite"
    if scheme in ("redis", "rediss", "unix"):
        parts = urlsplit(url)
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"url {url!r}: expected redis://host:port/db")
        return "redis"
    raise ValueError(f"url {url!r}: expected sqlite:///<path> or redis://host:port/db")


def sqlite_path(url: str, data_dir: Path) -> Path:
    """The SQLite file: `<data dir>/xo-migrate.db` by default; a relative path in the URL is
    relative to the data dir."""
    if not url:
        return data_dir / SQLITE_NAME
    path = Path(url[len("sqlite:///") :]).expanduser()
    return path if path.is_absolute() else data_dir / path
