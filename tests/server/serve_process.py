"""`xo-migrate serve` as a real process, for the tests that need one: exit status and stderr,
signals (Ctrl-C, SIGKILL), its own file-descriptor limit."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def spawn_serve(
    config: Path | None,
    *args: str,
    cwd: Path = ROOT,
    stderr: int = asyncio.subprocess.PIPE,
    preexec_fn: Callable[[], None] | None = None,
) -> asyncio.subprocess.Process:
    """`xo-migrate serve [--config config] *args`, run from `cwd` with this checkout
    importable. Without a config it serves the embedded demo lab."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        *(("--config", str(config)) if config is not None else ()),
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=preexec_fn,
    )


async def wait_listening(proc: asyncio.subprocess.Process, timeout: float = 30) -> bytes | None:
    """The line `serve` prints once it listens, or None if it exited before."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            return None
        if b"xo-cli register" in line:
            return line
