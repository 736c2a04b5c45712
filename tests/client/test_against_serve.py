"""The client against `xo-migrate serve` itself (a subprocess on its embedded simulated lab,
`--port 0`): what a person does after `make demo`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import pytest

from tests.client.conftest import CLI

pytestmark = pytest.mark.timeout(120)


async def run(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(input.encode() if input else None), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_login_ls_migrate_against_xo_migrate_serve(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))
    server = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--port", "0", "--seed", "7",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert server.stdout is not None
    try:
        url = ""
        while not url:
            line = (await asyncio.wait_for(server.stdout.readline(), 60)).decode()
            assert line, "serve exited before listening"
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else ""
        assert not url.endswith(":0")
        code, out = await run(
            env, "login", url, "--email", "admin@admin.net", "--password-stdin", input="admin\n"
        )
        assert code == 0, out
        for _ in range(100):  # the pools connect in the background
            code, out = await run(env, "ls", "hosts", "--json")
            if code == 0 and len(json.loads(out)) == 5:
                break
            await asyncio.sleep(0.2)
        assert {h["name_label"] for h in json.loads(out)} == {"a1", "a2", "a3", "b1", "b2"}
        code, out = await run(env, "migrate", "web-01", "a2", "--json")  # XenMotion, ~1 s
        assert code == 0, out
        final = json.loads(out.splitlines()[-1])
        assert final["event"] == "finished" and final["status"] == "success"
    finally:
        server.send_signal(signal.SIGINT)
        await asyncio.wait_for(server.wait(), 30)
    assert server.returncode == 0
