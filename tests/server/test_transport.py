"""Reference section 10, items 1 and 2: the WebSocket endpoint and JSON-RPC framing."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.xo_client import MIN_SAFE_INTEGER


async def test_websocket_only_at_exactly_slash_api_slash(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/api", "/api/?x=1", "/", "/api/foo/bar", "/apix/"):
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(f"ws://127.0.0.1:{server.port}{path}")
        # No cookie, no subprotocol, no Origin needed.
        ws = await session.ws_connect(server.ws_url)
        await ws.send_str('{"id":1,"jsonrpc":"2.0","method":"system.getVersion"}')
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT
        assert msg.data == '{"id":1,"jsonrpc":"2.0","result":"0.1"}'
        await ws.close()


async def test_plain_get_without_upgrade_is_refused(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{server.base}/api/") as resp:
        assert resp.status == 426


async def test_ids_echoed_verbatim_with_exact_key_order(connect) -> None:
    client = await connect()
    # The first request of every xo-cli run has this id, sent without `params`.
    response = await client.request("system.getVersion")
    assert client.frames[-1] == f'{{"id":{MIN_SAFE_INTEGER},"jsonrpc":"2.0","result":"0.1"}}'
    assert response["id"] == MIN_SAFE_INTEGER
    for req_id in ("abc", "", 0, 1.5, -1e300, 2**63 - 1, -(2**63)):
        response = await client.request("system.getVersion", req_id=req_id)
        assert response == {"id": req_id, "jsonrpc": "2.0", "result": "0.1"}
        assert type(response["id"]) is type(req_id)
    error = await client.request("nope.nope")
    assert client.frames[-1].startswith('{"error":{"code":-32601,"data":"nope.nope","message":')
    assert list(error) == ["error", "id", "jsonrpc"]
    assert client.unexpected == []


async def test_json_rpc_1_0_requests_and_positional_params(connect) -> None:
    client = await connect()
    response = await client.request("system.getVersion", version=None)
    assert response["result"] == "0.1"
    response = await client.request("system.getServerVersion", [], version=None)
    assert isinstance(response["result"], str)
    # A positional array against a method with a params spec: Ajv's `must be object`.
    response = await client.request("system.methodSignature", ["x"])
    assert response["error"]["code"] == 10
    assert response["error"]["data"]["errors"][0]["message"] == "must be object"


async def test_missing_params_means_empty_object(connect) -> None:
    client = await connect(signed_in=True)
    assert await client.call("xo.getAllObjects") == {}
    assert await client.call("xo.getAllObjects", {}) == {}


async def test_no_frame_for_invalid_messages_and_notifications(connect) -> None:
    client = await connect()
    silent = [
        "not json",
        "[]",
        '[{"id":1,"jsonrpc":"2.0","method":"system.getVersion"}]',  # batches: no reply on WS
        '{"jsonrpc":"2.0","method":"system.getVersion"}',  # notification
        '{"id":null,"jsonrpc":"2.0","method":"system.getVersion"}',
        '{"id":true,"jsonrpc":"2.0","method":"system.getVersion"}',
        '{"id":{},"jsonrpc":"2.0","method":"system.getVersion"}',
        '{"id":1,"jsonrpc":"1.0","method":"system.getVersion"}',
        '{"id":1,"jsonrpc":"2.0","method":42}',
        '{"id":1,"jsonrpc":"2.0","method":"system.getVersion","params":"x"}',
        '{"id":1,"jsonrpc":"2.0","method":"system.getVersion","params":null}',
        '{"id":1,"jsonrpc":"2.0"}',
        '"just a string"',
    ]
    for frame in silent:
        await client.send_raw(frame)
    response = await client.request("system.getVersion", req_id="sentinel")
    assert response["result"] == "0.1"
    await asyncio.sleep(0.1)
    assert client.frames == ['{"id":"sentinel","jsonrpc":"2.0","result":"0.1"}']
    assert client.unexpected == []


async def test_exactly_one_response_per_request_under_load(connect) -> None:
    client = await connect(signed_in=True)
    methods = ["system.getVersion", "xo.getAllObjects", "nope", "token.create", "session.getUser"]
    responses = await asyncio.gather(
        *(client.request(methods[i % len(methods)]) for i in range(200))
    )
    ids = [r["id"] for r in responses]
    assert len(set(ids)) == 200
    await asyncio.sleep(0.05)
    assert len(client.frames) == 201  # + the sign-in
    for r in responses:
        if "error" in r:
            assert type(r["error"]["code"]) is int and type(r["error"]["message"]) is str
    assert client.unexpected == []


async def test_binary_frames_are_read_as_text(connect) -> None:
    client = await connect()
    await client.ws.send_bytes(b'{"id":7,"jsonrpc":"2.0","method":"system.getVersion"}')
    await client.ws.send_bytes(b"\xff\xfe garbage")
    response = await client.request("system.getVersion", req_id=8)
    assert response["result"] == "0.1"
    await asyncio.sleep(0.05)
    assert [orjson.loads(f)["id"] for f in client.frames] == [7, 8]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_wss_with_a_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    from server.app import ssl_context

    config = make_config(tmp_path / "data", cert_file=str(cert), key_file=str(key))
    async with running_server(config, ssl_context=ssl_context(config)) as srv:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(srv.ws_url, ssl=client_ctx)
            assert srv.ws_url.startswith("wss://")
            await ws.send_str('{"id":-1,"jsonrpc":"2.0","method":"system.getVersion"}')
            msg = await ws.receive(timeout=5)
            assert orjson.loads(msg.data)["result"] == "0.1"
            await ws.close()


async def test_http_post_with_bearer_cookie_and_batches(server: RunningServer, connect) -> None:
    client = await connect(signed_in=True)
    token = await client.call("token.create", {"description": "service"})
    url = f"{server.base}/api/"
    async with aiohttp.ClientSession() as http:
        # Anonymous: public methods only.
        async with http.post(
            url, data=b'{"id":1,"jsonrpc":"2.0","method":"xo.getAllObjects"}'
        ) as r:
            assert r.status == 200
            assert (await r.json())["error"]["code"] == 2
        headers = {"Authorization": f"Bearer {token}"}
        batch = [
            {"id": 1, "jsonrpc": "2.0", "method": "xo.getAllObjects"},
            {"jsonrpc": "2.0", "method": "system.getVersion"},  # notification: no entry
            {"id": "b", "jsonrpc": "2.0", "method": "nope"},
            {"id": 3},
        ]
        async with http.post(url, data=orjson.dumps(batch), headers=headers) as r:
            body = await r.json()
        assert body[0] == {"id": 1, "jsonrpc": "2.0", "result": {}}
        assert body[1]["id"] == "b" and body[1]["error"]["code"] == -32601
        assert body[2] == {
            "error": {"code": -32600, "message": "invalid JSON-RPC request"},
            "id": None,
            "jsonrpc": "2.0",
        }
        cookies = {"authenticationToken": token}
        data = b'{"id":2,"jsonrpc":"2.0","method":"session.getUser"}'
        json_type = {"Content-Type": "application/json"}
        async with http.post(url, data=data, cookies=cookies, headers=json_type) as r:
            assert (await r.json())["result"]["email"] == "admin@admin.net"
        async with http.post(url, data=data, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
            assert (await r.json())["error"] == {"message": "invalid credentials", "code": 3}
        async with http.post(url, data=b"{not json") as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == -32700
        async with http.post(url, data=b'{"jsonrpc":"2.0","method":"system.getVersion"}') as r:
            assert r.status == 204
