"""Issue 15: an instance that loses Redis keeps serving reads from its caches, refuses
changes with a clear error, and catches up when Redis is back."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from server.storage import DatabaseSettings
from tests.helpers import wait_until
from tests.redis_server import PROCESSES
from tests.server.conftest import make_config, running_server
from tests.server.xo_client import RpcError, XoClient

pytestmark = pytest.mark.timeout(90)


async def test_reads_go_on_changes_are_refused_then_it_catches_up(
    redis: str, tmp_path: Path
) -> None:
    config = make_config(tmp_path, database=DatabaseSettings(url=redis, lease_ttl_s=2.0))
    async with running_server(config) as srv:
        admin = await XoClient.connect(srv.ws_url)
        await admin.sign_in()
        await admin.call("user.create", {"email": "before@x.net", "password": "pw"})
        users = await admin.call("user.getAll")
        redis_process = PROCESSES[redis]
        redis_process.send_signal(signal.SIGSTOP)  # unreachable: it answers nothing
        try:
            with pytest.raises(RpcError) as refused:
                await admin.call("user.create", {"email": "during@x.net", "password": "pw"})
            error = refused.value.error
            assert error["code"] == 28 and error["data"]["serviceName"] == "database"
            assert "unreachable" in error["data"]["reason"]
            assert await admin.call("user.getAll") == users  # from the instance's copy
            assert await admin.call("xo.getAllObjects", {"filter": {"type": "VM"}}) == {}
            second = await XoClient.connect(srv.ws_url)  # a sign-in is a read: it works
            assert (await second.sign_in())["email"] == "admin@admin.net"
            await second.close()
        finally:
            redis_process.send_signal(signal.SIGCONT)

        async def writes_again() -> bool:
            try:
                await admin.call("user.create", {"email": "after@x.net", "password": "pw"})
            except RpcError:
                return False
            return True

        await wait_until(writes_again, timeout=20, interval=0.2)
        emails = [u["email"] for u in await admin.call("user.getAll")]
        assert emails == ["admin@admin.net", "before@x.net", "after@x.net"]
        await admin.close()
