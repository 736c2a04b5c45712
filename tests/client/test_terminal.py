"""The client in a real terminal (tmux): the live bar updating in place, and Ctrl-C's question
(cancel the migration, or only stop watching)."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.client.conftest import CLI, Cli

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.timeout(90),
]


class Terminal:
    """A detached tmux session on a private server socket, 150x20."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def tmux(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "tmux",
            "-S",
            str(self.socket),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async def run(self, cli: Cli, *args: str) -> None:
        command = " ".join(
            [
                f"XDG_CONFIG_HOME={shlex.quote(str(cli.config_home))}",
                *(shlex.quote(a) for a in [*CLI, *args]),
                "; echo EXIT=$?; sleep 300",
            ]
        )
        await self.tmux("new-session", "-d", "-x", "150", "-y", "20", command)

    async def screen(self) -> str:
        return await self.tmux("capture-pane", "-p")

    async def wait_for(self, check: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            screen = await self.screen()
            if check(screen):
                return screen
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not on the screen after {timeout} s:\n{screen}")
            await asyncio.sleep(0.1)

    async def keys(self, *keys: str) -> None:
        await self.tmux("send-keys", *keys)


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    with tempfile.TemporaryDirectory(prefix="xomt") as directory:  # short: socket path limit
        term = Terminal(Path(directory) / "tmux.sock")
        try:
            yield term
        finally:
            if term.socket.exists():
                await term.tmux("kill-server")


def percent_of(screen: str, label: str) -> int | None:
    for line in screen.splitlines():
        if label in line:
            found = re.search(r"(\d+)%", line)
            return int(found.group(1)) if found else None
    return None


async def test_live_bar_updates_in_place_and_ctrl_c_can_stop_watching(
    logged_in: Cli, terminal: Terminal
) -> None:
    lab = logged_in.lab
    lab.sim.timing.time_scale = 0.02  # db-01 to Pool B: about 7 s
    await terminal.run(logged_in, "migrate", "db-01", "b1")
    label = "db-01 → b1"
    first = await terminal.wait_for(lambda s: (percent_of(s, label) or 0) >= 1)
    start = percent_of(first, label) or 0
    later = await terminal.wait_for(lambda s: (percent_of(s, label) or 0) >= start + 10)
    bar = next(line for line in later.splitlines() if label in line)
    assert "━" in bar and "GiB/s" in bar and "ETA" in bar  # bar, rate, ETA
    assert sum(label in line for line in later.splitlines()) == 1  # updated in place
    await terminal.keys("C-c")
    await terminal.wait_for(lambda s: "[c] cancel the migration, [s] stop watching" in s)
    await terminal.keys("s", "Enter")
    screen = await terminal.wait_for(lambda s: "EXIT=" in s)
    assert "EXIT=130" in screen
    assert "stopped watching; db-01 → b1 goes on" in screen
    # Only the watching stopped: the migration ends well in the server.
    [record] = [r for r in await lab.client.call("migration.getAll") if r["vmName"] == "db-01"]
    final = await lab.client.call("migration.wait", {"id": record["id"]}, timeout=60)
    assert final["status"] == "success"


async def test_ctrl_c_then_cancel_cancels_the_migration(logged_in: Cli, terminal: Terminal) -> None:
    lab = logged_in.lab
    lab.sim.timing.time_scale = 0.02
    await terminal.run(logged_in, "migrate", "db-01", "b1")
    await terminal.wait_for(lambda s: (percent_of(s, "db-01 → b1") or 0) >= 1)
    await terminal.keys("C-c")
    await terminal.wait_for(lambda s: "[r] resume watching?" in s)
    await terminal.keys("c", "Enter")
    screen = await terminal.wait_for(lambda s: "EXIT=" in s)
    assert "db-01 → b1: cancelled" in screen
    assert "EXIT=130" in screen
    [record] = [r for r in await lab.client.call("migration.getAll") if r["vmName"] == "db-01"]
    assert record["status"] == "cancelled"
