"""Fixtures for the real-JavaScript-client tests: node dependencies installed on demand, a runner
for one node scenario script, and the migration `lab` (server + both simulated pools)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.migrations.conftest import lab, migration_settings

__all__ = ["lab", "migration_settings"]

NODE_DIR = Path(__file__).resolve().parent
INSTALL_TIMEOUT_S = 300.0
SCENARIO_TIMEOUT_S = 60.0

RunScenario = Callable[..., Awaitable[dict[str, Any]]]


def _installed() -> bool:
    # npm writes node_modules/.package-lock.json on every install; older than the lock = stale.
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="session")
def node_deps() -> Path:
    """tests/node/node_modules from the committed lock file (npm ci), installed when missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm must be on PATH to run the real JavaScript clients")
    if not _installed():
        started = time.monotonic()
        try:
            done = subprocess.run(
                [
                    npm,
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(NODE_DIR),
                ],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {NODE_DIR} took more than {INSTALL_TIMEOUT_S:.0f} s")
        if done.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{done.stdout}\n{done.stderr}")
        print(f"npm ci in {NODE_DIR}: {time.monotonic() - started:.1f} s")
    return NODE_DIR / "node_modules"


@pytest.fixture
def run_scenario(node_deps: Path) -> RunScenario:
    """Run `node <script> <json opts>` without blocking the loop; return its JSON report."""
    node = shutil.which("node")
    assert node is not None

    async def run(
        script: str, opts: dict[str, Any], timeout: float = SCENARIO_TIMEOUT_S
    ) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / script),
            json.dumps(opts),
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"node {script} did not finish within {timeout:.0f} s")
        assert proc.returncode == 0, f"node {script} exited {proc.returncode}:\n{stderr.decode()}"
        lines = stdout.decode().strip().splitlines()
        assert lines, f"node {script} printed nothing; stderr:\n{stderr.decode()}"
        report: dict[str, Any] = json.loads(lines[-1])
        report["stderr"] = stderr.decode()
        return report

    return run
