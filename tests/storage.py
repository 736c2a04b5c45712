"""The store the servers built by the tests use (`[database] url`), set per test by the
`storage_backend` fixture (tests/conftest.py): "" is SQLite in the data dir.

On Redis, each data dir of a test gets its own Redis database (numbered in the order they
appear): a server restarted on the same data dir finds its data again, and two servers of one
test with two data dirs are two installations, as they are on SQLite."""

from __future__ import annotations

from pathlib import Path

DATABASE: dict[str, str] = {"url": ""}
_INDEX: dict[str, int] = {}


def database_url(data_dir: Path) -> str:
    base = DATABASE["url"]
    if not base:
        return ""
    index = _INDEX.setdefault(str(data_dir), len(_INDEX))
    return base.rsplit("/", 1)[0] + f"/{index}"


def reset() -> None:
    _INDEX.clear()
