"""The config file, and `xo-migrate serve` as a process (start, answer, Ctrl-C)."""

from __future__ import annotations

import asyncio
import signal
import tomllib
from pathlib import Path

import aiohttp
import pytest

from server.auth import AuthSettings
from server.config import ConfigError, ServerConfig, load_config, parse_config
from server.guard import ConnectionLimits
from server.limits import InputLimits
from server.migrations.settings import MigrationSettings
from tests.server.serve_process import ROOT, free_port, spawn_serve, wait_listening
from tests.server.xo_client import XoClient

# Their own data dirs and config files: the store is SQLite whatever the run.
pytestmark = pytest.mark.sqlite_only


def test_example_config_parses_to_the_defaults() -> None:
    cfg = load_config(ROOT / "config.example.toml")
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8080)
    assert cfg.data_dir == ROOT / "data"
    assert cfg.auth.default_token_validity_ms == 30 * 86400e3
    assert cfg.auth.throttling_delay_s == 2.0
    assert cfg.pools == []
    assert cfg.mounts == {}
    assert cfg.signin.session_cookie_validity_ms == 10 * 3600e3
    assert cfg.signin.permanent_cookie_validity_ms == 30 * 86400e3
    assert cfg.migration == MigrationSettings()  # every [migration] key shown at its default
    # Every limit is in the example, with its default value.
    assert cfg.auth == AuthSettings()
    assert cfg.limits == InputLimits()
    assert cfg.connections == ConnectionLimits()
    defaults = ServerConfig()
    assert (cfg.allowed_origins, cfg.log_burst, cfg.log_window_s) == (
        defaults.allowed_origins,
        defaults.log_burst,
        defaults.log_window_s,
    )


def test_mounts_and_web_sign_in_validities(tmp_path: Path) -> None:
    (tmp_path / "ui").mkdir()
    (tmp_path / "other").mkdir()
    text = f"""
[http.mounts]
"/" = "ui"
"/v5/" = "{tmp_path / "other"}"
[authentication]
session_cookie_validity = "1 hour"
permanent_cookie_validity = "7 days"
"""
    cfg = parse_config(tomllib.loads(text), tmp_path)
    assert cfg.mounts == {"/": tmp_path / "ui", "/v5": tmp_path / "other"}  # relative to the file
    assert cfg.signin.session_cookie_validity_ms == 3600e3
    assert cfg.signin.permanent_cookie_validity_ms == 7 * 86400e3
    for bad in (
        {"http": {"mounts": {"ui": "ui"}}},  # not a URL prefix
        {"http": {"mounts": {"//x": "ui"}}},
        {"http": {"mounts": {"/a/../b": "ui"}}},
        {"http": {"mounts": {"/": "missing"}}},  # not a directory
        {"http": {"mounts": {"/": 3}}},
        {"http": {"mounts": "ui"}},
        {"authentication": {"session_cookie_validity": "10 s"}},  # under token.create's minimum
        {"authentication": {"permanent_cookie_validity": "1 year"}},  # over max_token_validity
        {"authentication": {"session_cookie_validity": "later"}},
    ):
        with pytest.raises(ConfigError):
            parse_config(bad, tmp_path)


def test_migration_keys(tmp_path: Path) -> None:
    cfg = parse_config({"migration": {"plan_checks": 2, "per_pool_limit": 5}}, tmp_path)
    assert (cfg.migration.plan_checks, cfg.migration.per_pool_limit) == (2, 5)
    with pytest.raises(ConfigError, match="plan_checks"):
        parse_config({"migration": {"plan_checks": 0}}, tmp_path)


def test_limits_are_parsed_and_checked(tmp_path: Path) -> None:
    text = """
[http]
max_connections_per_address = 3
header_timeout = "2 s"
allowed_origins = ["https://xo.example.org"]
[api]
unauthenticated_timeout = 0
[authentication]
scrypt_n = 16384
failures_per_address = 4
[limits]
max_depth = 4
[log]
repeat_burst = 2
"""
    cfg = parse_config(tomllib.loads(text), tmp_path)
    assert cfg.connections.max_connections_per_address == 3
    assert cfg.connections.header_timeout_s == 2.0
    assert cfg.connections.unauthenticated_timeout_s == 0.0
    assert cfg.allowed_origins == ["https://xo.example.org"]
    assert (cfg.auth.scrypt_n, cfg.auth.failures_per_address) == (16384, 4)
    assert cfg.limits.max_depth == 4 and cfg.log_burst == 2
    for bad in (
        {"authentication": {"scrypt_n": 1000}},
        {"authentication": {"checks_per_address": 0}},
        {"limits": {"max_depth": "deep"}},
        {"limits": {"max_nesting": 3}},
        {"http": {"header_timeout": 0}},
        {"http": {"allowed_origins": "https://x"}},
        {"log": {"repeat_burst": True}},
    ):
        with pytest.raises(ConfigError):
            parse_config(bad, tmp_path)


def test_pools_and_strictness(tmp_path: Path) -> None:
    text = """
data_dir = "/var/lib/xo"
[http]
port = 9000
[[pools]]
label = "A"
url = "10.0.0.1"
username = "root"
password_env = "A_PW"
allow_unauthorized = true
"""
    cfg = parse_config(tomllib.loads(text), tmp_path)
    (pool,) = cfg.pools
    assert (
        pool.url == "https://10.0.0.1/" and pool.password_env == "A_PW" and pool.allow_unauthorized
    )
    assert parse_config(tomllib.loads(text), tmp_path).pools[0].id == pool.id  # stable id
    with pytest.raises(ConfigError, match="unknown config key"):
        parse_config({"http": {"prot": 1}}, tmp_path)
    with pytest.raises(ConfigError):
        parse_config({"pools": [{"url": "x"}]}, tmp_path)
    with pytest.raises(ConfigError):
        parse_config({"authentication": {"throttling_delay": "soon"}}, tmp_path)


@pytest.mark.timeout(60)
async def test_serve_process_answers_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "xo.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[http]\nport = {port}\n')
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "favicon.ico").write_bytes(b"icon")
    proc = await spawn_serve(config, "--mount", "/ui=ui", cwd=tmp_path)  # relative to cwd
    try:
        line = await wait_listening(proc)
        assert line is not None, "server exited early"
        assert f"xo-cli register http://127.0.0.1:{port} admin@admin.net admin".encode() in line
        line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
        assert f"web UI: http://127.0.0.1:{port}/ui".encode() in line
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{port}"
            async with session.get(f"{base}/ui/favicon.ico") as resp:
                assert resp.status == 200 and await resp.read() == b"icon"
            async with session.get(f"{base}/ui/", allow_redirects=False) as resp:
                assert (resp.status, resp.headers["Location"]) == (302, "/signin")
        client = await XoClient.connect(f"ws://127.0.0.1:{port}/api/")
        assert (await client.sign_in())["email"] == "admin@admin.net"
        token = await client.call("token.create")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        await asyncio.wait_for(client.closed.wait(), 5)  # the socket was closed by the server
        await client.close()
        stderr = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert "Traceback" not in stderr
        assert "event=stopped" in stderr
        assert token not in stderr and "admin@admin.net admin" not in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.timeout(90)
async def test_demo_serves_the_embedded_lab_and_its_printed_commands_work(tmp_path: Path) -> None:
    """`make demo` = `xo-migrate serve` without a config: the simulated lab in-process, and
    the example commands it prints can be run as they are."""
    port = free_port()
    proc = await spawn_serve(None, "--port", str(port), cwd=tmp_path)  # data in ./data
    try:
        lines: list[str] = []
        while not any("xo-cli migration.getAll" in line for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
            assert raw, "server exited early"
            lines.append(raw.decode())
        migrate = next(line.split() for line in lines if "xo-cli vm.migrate vm=" in line)
        params = dict(arg.split("=", 1) for arg in migrate[2:])
        client = await XoClient.connect(f"ws://127.0.0.1:{port}/api/")
        await client.sign_in()
        for _ in range(200):  # the pools connect in the background
            servers = await client.call("server.getAll")
            if len(servers) == 2 and all(s["status"] == "connected" for s in servers):
                break
            await asyncio.sleep(0.05)
        assert await client.call("vm.migrate", params, timeout=30) is True
        vm = (await client.call("xo.getAllObjects", {"filter": {"id": params["vm"]}}))[params["vm"]]
        assert vm["name_label"] == "web-01" and vm["$container"] == params["targetHost"]
        await client.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert (tmp_path / "data" / "xo-migrate.db").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
