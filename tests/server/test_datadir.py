"""Issue 10, class 6 (start-up): `xo-migrate serve` never runs on damaged or vanished state.

A real data dir is made by a real server (a user added, the admin's password changed), then
damaged as disks and people damage them; each `serve` process must exit non-zero with one
line naming the file and what to do, leave the files as they were, and never fall back to a
fresh database with admin/admin. A fresh start creates everything private (0700 / 0600)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.storage.records import User
from tests.server.conftest import make_config, running_server
from tests.server.serve_process import free_port, spawn_serve, wait_listening
from tests.server.xo_client import XoClient

# Its own data dirs and files: the store is SQLite whatever the run.
pytestmark = [pytest.mark.timeout(90), pytest.mark.sqlite_only]


async def serve_once(data_dir: Path, config_dir: Path) -> tuple[int | None, str]:
    """Start `serve` on `data_dir`: (exit status, or None if it started and answered; stderr)."""
    port = free_port()
    config = config_dir / f"xo-{port}.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n[http]\nport = {port}\n[authentication]\nscrypt_n = 16384\n'
    )
    proc = await spawn_serve(config)
    try:
        if await wait_listening(proc) is not None:
            return None, ""
        status = await asyncio.wait_for(proc.wait(), 10)
        return status, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` as a read-only mount would be: chmod for a normal user; root ignores modes, so
    for root the immutable attribute (ext2/3/4), or the test is skipped."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: cannot make a directory read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def truncate_to(size: int) -> Callable[[Path], None]:
    def damage(data: Path) -> None:
        with open(data / "xo-migrate.db", "r+b") as f:
            f.truncate(size)

    return damage


def overwrite_header(data: Path) -> None:
    with open(data / "xo-migrate.db", "r+b") as f:
        f.write(b"\0" * 100)


def overwrite_middle(data: Path) -> None:
    db = data / "xo-migrate.db"
    with open(db, "r+b") as f:
        f.seek(db.stat().st_size // 2)
        f.write(os.urandom(8192))


def remove_database(data: Path) -> None:
    (data / "xo-migrate.db").unlink()


def short_secret(data: Path) -> None:
    (data / "secret.key").write_bytes(b"x")


async def test_damaged_or_vanished_state_is_refused_in_one_line(tmp_path: Path) -> None:
    original = tmp_path / "original"
    async with running_server(make_config(original)) as srv:
        admin = await XoClient.connect(srv.ws_url)
        await admin.sign_in()
        await admin.call("user.create", {"email": "user@x.net", "password": "pw"})
        pw_hash = (await srv.state.storage.user_by_email("user@x.net")).pw_hash  # type: ignore[union-attr]
        for i in range(300):  # enough pages for a cut in the middle to land in the data
            await srv.state.storage.add_user(User(str(uuid.uuid4()), f"user{i}@x.net", pw_hash))
        me = (await admin.call("session.getUser"))["id"]
        await admin.call("user.set", {"id": me, "password": "changed"})
        await admin.close()
    assert not (original / "xo-migrate.db-wal").exists()  # checkpointed at the clean stop
    size = (original / "xo-migrate.db").stat().st_size

    cases: dict[str, tuple[Callable[[Path], None], str]] = {
        "empty": (truncate_to(0), "is empty (truncated)"),
        "cut": (truncate_to(size // 2), "is damaged (database disk image is malformed)"),
        "header": (overwrite_header, "is not an SQLite database"),
        "middle": (overwrite_middle, "is damaged"),
        "vanished": (remove_database, "is missing, but"),
        "secret": (short_secret, "holds 1 bytes, at least 32 are needed"),
    }
    dirs = {}
    for name, (damage, _) in cases.items():
        dirs[name] = tmp_path / name
        shutil.copytree(original, dirs[name])
        damage(dirs[name])
    before = {name: sorted(p.name for p in d.iterdir()) for name, d in dirs.items()}
    results = await asyncio.gather(*(serve_once(d, tmp_path) for d in dirs.values()))
    for (name, (_, expected)), (status, stderr) in zip(cases.items(), results, strict=True):
        assert status == 1, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xo-migrate: "), (name, stderr)
        assert expected in lines[0], (name, lines[0])
        named = "secret.key" if name == "secret" else "xo-migrate.db"
        assert str(dirs[name] / named) in lines[0], (name, lines[0])
        assert "restore it from a backup" in lines[0]
        # Nothing was re-created or changed.
        assert sorted(p.name for p in dirs[name].iterdir()) == before[name], name
    assert (dirs["empty"] / "xo-migrate.db").stat().st_size == 0

    # The undamaged copy still holds the changed password and the users.
    status, _ = await serve_once(original, tmp_path)
    assert status is None


async def test_a_read_only_data_dir_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_server(make_config(data)):
        pass
    with read_only(data):
        status, stderr = await serve_once(data, tmp_path)
    assert status == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"xo-migrate: data dir {data} is not writable")


async def test_a_fresh_data_dir_is_private(tmp_path: Path) -> None:
    data = tmp_path / "deep" / "data"
    async with running_server(make_config(data)) as srv:
        client = await XoClient.connect(srv.ws_url)
        await client.sign_in()
        await client.call("token.create")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
        await client.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert modes["xo-migrate.db"] == 0o600 and modes["secret.key"] == 0o600
    assert modes.get("xo-migrate.db-wal", 0o600) == 0o600
    assert modes.get("xo-migrate.db-shm", 0o600) == 0o600
    assert {"xo-migrate.db", "secret.key"} <= set(modes)
