"""Fixtures: the `xo-migrate` client run as a real subprocess (`python -m server.cli ...`)
against the server on the simulated lab, with its registration in a temporary config dir.

The server runs in the test's event loop, so the client is started with asyncio's subprocess
API (a blocking `subprocess.run` would stop the very server it talks to).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.migrations.service import MigrationSettings
from tests.migrations.conftest import Lab, lab_on
from xen.sim import Simulator

CLI = [sys.executable, "-m", "server.cli"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


@dataclass
class Cli:
    lab: Lab
    config_home: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.config_home), COLUMNS="160")
        env.pop("FORCE_COLOR", None)
        return env

    async def start(self, *args: str, stdin: bool = False) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *CLI,
            *args,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )

    async def run(self, *args: str, input: str | None = None, timeout: float = 60) -> Result:
        proc = await self.start(*args, stdin=input is not None)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(input.encode() if input is not None else None)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    async def login(self) -> Result:
        result = await self.run(
            "login",
            self.lab.server.base,
            "--email",
            "admin@admin.net",
            "--password-stdin",
            input="admin\n",
        )
        assert result.code == 0, result
        return result


@pytest.fixture
def migration_settings() -> MigrationSettings:
    return MigrationSettings(retry_delay_s=0.2, cancel_wait_s=10.0)


@pytest.fixture
async def lab(
    tmp_path: Path, sim: Simulator, migration_settings: MigrationSettings
) -> AsyncIterator[Lab]:
    (tmp_path / "server").mkdir()
    async with lab_on(sim, tmp_path / "server", migration_settings) as running:
        yield running


@pytest.fixture
def cli(lab: Lab, tmp_path: Path) -> Cli:
    return Cli(lab, tmp_path / "config")


@pytest.fixture
async def logged_in(cli: Cli) -> Cli:
    await cli.login()
    return cli
