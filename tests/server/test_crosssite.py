"""Issue 10, class 4: a page on another site cannot act through a signed-in admin's cookie.

What a browser would send for a cross-site form or `fetch` with `text/plain` (no CORS
preflight): the cookie, an `Origin` of the other site. Refused (403) on POST /api/ and REST,
and nothing happens; the same request from the server's own origin as JSON goes through, and
requests authenticated by a header are not concerned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.helpers import admin_token as tokens_of_admin
from tests.server.conftest import RunningServer, make_config, running_server

pytestmark = pytest.mark.timeout(30)

CREATE_ADMIN = orjson.dumps(
    {
        "id": 1,
        "jsonrpc": "2.0",
        "method": "user.create",
        "params": {"email": "evil@x.net", "password": "p", "permission": "admin"},
    }
)


async def admin_token(srv: RunningServer) -> str:
    return await tokens_of_admin(srv.state)


async def post(
    srv: RunningServer, path: str, body: bytes, headers: dict[str, str], cookie: str | None
) -> tuple[int, Any]:
    cookies = {"authenticationToken": cookie} if cookie else None
    async with aiohttp.ClientSession(srv.base, cookies=cookies) as http:
        async with http.post(path, data=body, headers=headers) as resp:
            return resp.status, await resp.json() if resp.status != 204 else None


async def emails(srv: RunningServer) -> list[str]:
    return [u.email for u in await srv.state.storage.all_users()]


async def test_cross_site_posts_with_the_cookie_are_refused(server: RunningServer) -> None:
    token = await admin_token(server)
    own = server.base
    for headers in (
        {"Content-Type": "text/plain", "Origin": "https://evil.example"},
        {"Content-Type": "text/plain"},  # no Origin (an old browser): the type still gives it away
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": own},
        {"Content-Type": "application/json", "Origin": "https://evil.example"},
        {"Content-Type": "application/json", "Origin": "null"},  # sandboxed frame
        {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
    ):
        status, body = await post(server, "/api/", CREATE_ADMIN, headers, token)
        assert status == 403, headers
        assert body["error"]["code"] == 2 and body["error"]["data"]["reason"], headers
    assert await emails(server) == ["admin@admin.net"]  # nothing happened

    # From the server's own pages, as JSON: fine.
    for headers in (
        {"Content-Type": "application/json", "Origin": own},
        {"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"},
    ):
        call = orjson.dumps({"id": 2, "jsonrpc": "2.0", "method": "session.getUser"})
        status, body = await post(server, "/api/", call, headers, token)
        assert status == 200 and body["result"]["email"] == "admin@admin.net"
    # A bearer token is not sent by browsers on their own: no check.
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    status, body = await post(server, "/api/", CREATE_ADMIN, bearer, None)
    assert status == 200 and "result" in body


async def test_rest_cross_site_posts_are_refused(server: RunningServer) -> None:
    token = await admin_token(server)
    server.state.store.set({"id": "v1", "type": "VM", "$pool": "p"})
    path = "/rest/v0/vms/v1/actions/migrate"
    body = orjson.dumps({"hostId": "h1"})
    status, error = await post(
        server, path, body, {"Content-Type": "text/plain", "Origin": "https://evil.example"}, token
    )
    assert status == 403 and error["data"]["reason"].startswith("cross-origin request")
    status, error = await post(server, path, body, {"Content-Type": "text/plain"}, token)
    assert status == 403 and "application/json" in error["data"]["reason"]
    # Same origin, JSON: the request is handled (here: 404, no such host).
    status, error = await post(
        server, path, body, {"Content-Type": "application/json", "Origin": server.base}, token
    )
    assert status == 404 and error["code"] == 1


async def test_allowed_origins_are_accepted(tmp_path: Path) -> None:
    config = make_config(tmp_path, allowed_origins=["https://XO.example.org/"])
    async with running_server(config) as srv:
        call = orjson.dumps({"id": 2, "jsonrpc": "2.0", "method": "session.getUser"})
        headers = {"Content-Type": "application/json", "Origin": "https://xo.example.org"}
        status, body = await post(srv, "/api/", call, headers, await admin_token(srv))
        assert status == 200 and body["result"]["email"] == "admin@admin.net"
        headers["Origin"] = "https://xo.example.org.evil.example"
        status, _ = await post(srv, "/api/", call, headers, await admin_token(srv))
        assert status == 403
