"""Issue 10, class 3: connections never outstay their welcome, and no client can hold them all.

Real sockets against the server behind its connection guard (server/guard.py), with short
timeouts: silent TCP, a slowloris head, an idle keep-alive, a silent TLS client, a WebSocket
that never signs in or stops answering pings are all closed; caps per address and in total
refuse the extra connections of one client while another still gets in; and a `serve`
process with a low open-file limit neither locks a real client out nor floods its log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from server.app import GUARD
from server.logfilter import RateLimitFilter
from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.serve_process import free_port, spawn_serve, wait_listening
from tests.server.xo_client import XoClient
from xen.sim.certs import HostCertificates

pytestmark = [pytest.mark.timeout(60), pytest.mark.sqlite_only]  # its own config files
SHORT = 0.5  # seconds: every timeout under test


@contextlib.asynccontextmanager
async def server_with(
    tmp_path: Path, ssl_context: ssl.SSLContext | None = None, **limits: float
) -> AsyncIterator[RunningServer]:
    config = make_config(tmp_path)
    config.connections = dataclasses.replace(config.connections, **limits)
    async with running_server(config, ssl_context=ssl_context) as srv:
        yield srv


async def closed_after(reader: asyncio.StreamReader, limit: float = 10.0) -> float:
    """Seconds until the server closes the connection (reading whatever it sends)."""
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(65536), limit):
            pass
    return time.monotonic() - started


async def test_silent_and_slowloris_connections_are_closed(tmp_path: Path) -> None:
    async with server_with(tmp_path, header_timeout_s=SHORT) as srv:
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", srv.port)
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", srv.port)
        slow_w.write(b"GET /api/ HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:  # a header line every 100 ms: busy, but never done
            with contextlib.suppress(ConnectionError):
                for i in range(100):
                    await asyncio.sleep(0.1)
                    slow_w.write(f"X-{i}: y\r\n".encode())
                    await slow_w.drain()

        trickling = asyncio.create_task(trickle())
        silent, slow = await asyncio.gather(closed_after(silent_r), closed_after(slow_r))
        trickling.cancel()
        assert SHORT * 0.8 < silent < SHORT + 1.5
        assert SHORT * 0.8 < slow < SHORT + 1.5
        for writer in (silent_w, slow_w):
            writer.close()
        await asyncio.sleep(0.05)
        assert srv.app[GUARD].total == 0  # both closed connections were let go


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    async with server_with(tmp_path, keepalive_timeout_s=SHORT) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(
            b"POST /api/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 38\r\n\r\n"
            b'{"id":1,"method":"system.getVersion"}\n'
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"keep-alive" not in head.lower()
        assert SHORT * 0.8 < await closed_after(reader) < SHORT + 1.5
        writer.close()


async def test_a_body_sent_too_slowly_gets_408(tmp_path: Path) -> None:
    async with server_with(tmp_path, body_timeout_s=SHORT) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"POST /api/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408")
        writer.close()


async def test_a_silent_tls_client_is_closed_and_a_real_one_served(tmp_path: Path) -> None:
    certs = HostCertificates()
    try:
        context = certs.server_context("127.0.0.1")
        async with server_with(tmp_path, ssl_context=context, header_timeout_s=SHORT) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            assert SHORT * 0.8 < await closed_after(reader) < SHORT + 1.5
            writer.close()
            client_ctx = ssl.create_default_context(cafile=certs.bundle("ca", ["127.0.0.1"]))
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(srv.ws_url, ssl=client_ctx)
                await ws.send_str('{"id":1,"jsonrpc":"2.0","method":"system.getVersion"}')
                assert (await ws.receive_json(timeout=5))["result"] == "0.1"
                await asyncio.sleep(SHORT * 2)  # past the head deadline: it only bounds the head
                await ws.send_str('{"id":2,"jsonrpc":"2.0","method":"system.getVersion"}')
                assert (await ws.receive_json(timeout=5))["result"] == "0.1"
                await ws.close()
    finally:
        certs.close()


async def test_websockets_must_sign_in_and_answer_pings(tmp_path: Path) -> None:
    async with server_with(
        tmp_path, unauthenticated_timeout_s=SHORT, websocket_heartbeat_s=SHORT * 2
    ) as srv:
        anonymous = await XoClient.connect(srv.ws_url)
        assert await anonymous.call("system.getVersion") == "0.1"  # public calls: no reprieve
        signed_in = await XoClient.connect(srv.ws_url)
        await signed_in.sign_in()
        leaving = await XoClient.connect(srv.ws_url)
        await leaving.sign_in()
        await asyncio.sleep(SHORT / 2)
        assert await leaving.call("session.signOut") is True
        started = time.monotonic()
        await asyncio.wait_for(anonymous.closed.wait(), 5)
        assert anonymous.ws.close_code == 1008
        await asyncio.wait_for(leaving.closed.wait(), 5)
        assert time.monotonic() - started < SHORT + 1.5
        await asyncio.sleep(SHORT * 2)  # a signed-in client answering pings stays
        assert await signed_in.call("system.getVersion") == "0.1"

        # A client that stops answering pings (autoping off) is closed by the heartbeat.
        async with aiohttp.ClientSession() as http:
            mute = await http.ws_connect(srv.ws_url, autoping=False)
            await mute.send_str(
                '{"id":1,"method":"session.signIn","params":{"email":"admin@admin.net","password":"admin"}}'
            )
            started = time.monotonic()
            while not mute.closed:
                msg = await mute.receive(timeout=10)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert time.monotonic() - started < SHORT * 3 + 1.5
        for client in (anonymous, signed_in, leaving):
            await client.close()


async def test_caps_per_address_and_in_total(tmp_path: Path) -> None:
    async with server_with(tmp_path, max_connections_per_address=3, max_connections=5) as srv:
        mine = [await XoClient.connect(srv.ws_url) for _ in range(3)]
        with pytest.raises((aiohttp.ClientError, ConnectionError)):
            await XoClient.connect(srv.ws_url)  # a 4th from the same address
        other = await XoClient.connect(srv.ws_url, local_addr="127.0.0.2")
        assert await other.call("system.getVersion") == "0.1"
        third = await XoClient.connect(srv.ws_url, local_addr="127.0.0.3")
        with pytest.raises((aiohttp.ClientError, ConnectionError)):
            await XoClient.connect(srv.ws_url, local_addr="127.0.0.4")  # 6th in all
        await mine.pop().close()
        await asyncio.sleep(0.1)
        again = await XoClient.connect(srv.ws_url)  # room again
        assert await again.call("system.getVersion") == "0.1"
        for client in (*mine, other, third, again):
            await client.close()


def test_rate_limited_logging_keeps_a_count() -> None:
    now = [0.0]
    flt = RateLimitFilter(burst=3, window_s=10.0, clock=lambda: now[0])
    logger = logging.getLogger("xo_migrate.test_ratelimit")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    handler.addFilter(flt)
    logger.addHandler(handler)
    try:
        for i in range(1000):
            logger.warning("event=accept_failed error=%s n=%d", "EMFILE", i)
        logger.warning("event=other")
        now[0] = 11.0
        logger.warning("event=accept_failed error=%s n=%d", "EMFILE", 1000)
    finally:
        logger.removeHandler(handler)
    assert records == [
        "event=accept_failed error=EMFILE n=0",
        "event=accept_failed error=EMFILE n=1",
        "event=accept_failed error=EMFILE n=2",
        "event=other",
        "event=accept_failed error=EMFILE n=1000 suppressed=997",
    ]


@pytest.mark.timeout(90)
async def test_serve_with_few_file_descriptors_keeps_a_real_client_in(tmp_path: Path) -> None:
    """As reported: silent connections past the open-file limit locked a real client out and
    wrote 78,837 lines of EMFILE in 20 s. Here, 512 descriptors and 600 silent connections."""
    port = free_port()
    config = tmp_path / "xo.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[http]\nport = {port}\n'
        "max_connections_per_address = 300\n"
        "[authentication]\nscrypt_n = 16384\n"
    )

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    proc = await spawn_serve(config, preexec_fn=low_fd_limit)
    silent: list[asyncio.StreamWriter] = []
    try:
        assert await wait_listening(proc) is not None
        for _ in range(600):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                silent.append(writer)
        await asyncio.sleep(0.5)
        # 300 admitted from this address, the rest refused at once (a total cap of
        # 512 - 128 = 384 would have applied next); another address still gets in.
        client = await XoClient.connect(f"ws://127.0.0.1:{port}/api/", local_addr="127.0.0.2")
        assert (await client.sign_in())["email"] == "admin@admin.net"
        await client.close()
        for _ in range(3):  # keep knocking for a while
            for _ in range(100):
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
            await asyncio.sleep(0.2)
    finally:
        for writer in silent:
            writer.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
    stderr = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "Too many open files" not in stderr and "Traceback" not in stderr
    refused = [line for line in stderr.splitlines() if "event=connection_refused" in line]
    assert 1 <= len(refused) <= 20  # ~600 refusals, rate-limited to a burst per window
    assert len(stderr.splitlines()) < 100
