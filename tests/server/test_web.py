"""The web UI's HTTP side, as xo-server serves xo-web: static mounts, /signin, the `token`
cookie, the gate in front of mounted pages, /rest/v0/gui-routes (../shared/xo-web/README.md).

Requests go over real loopback sockets; path-escape attempts are written byte for byte on a raw
socket so that no client library normalizes them first.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from server.auth import token_hash
from server.signin import MAX_FORM_BYTES, RETURN_COOKIE, safe_return_url
from tests.helpers import count_tokens, expire_tokens
from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.xo_client import XoClient

ADMIN = {"username": "admin@admin.net", "password": "admin"}
SECRET = b"outside the mounted directory"
UA = "Mozilla/5.0 (test) xo-migrate-web"


@dataclass
class Web:
    server: RunningServer
    session: aiohttp.ClientSession
    root: Path

    @property
    def base(self) -> str:
        return self.server.base

    async def request(
        self, method: str, path: str, *, cookies: dict[str, str] | None = None, **kw: Any
    ) -> aiohttp.ClientResponse:
        headers = dict(kw.pop("headers", {}))
        headers.setdefault("User-Agent", UA)
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        async with self.session.request(
            method, self.base + path, headers=headers, allow_redirects=False, **kw
        ) as resp:
            await resp.read()
            return resp

    async def sign_in(
        self, form: dict[str, str] | None = None, cookies: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        return await self.request(
            "POST", "/signin/local", data=form if form is not None else ADMIN, cookies=cookies
        )

    async def token(self) -> str:
        resp = await self.sign_in()
        assert resp.status == 303, resp.status
        return set_cookies(resp)["token"].value

    async def raw_get(self, target: str, token: str) -> tuple[int, bytes]:
        """GET `target` exactly as written: no normalization, no encoding."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: token={token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status = int(data.split(b" ", 2)[1])
        return status, data


def set_cookies(resp: aiohttp.ClientResponse) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


def raw_set_cookie(resp: aiohttp.ClientResponse, name: str) -> str:
    return next(h for h in resp.headers.getall("Set-Cookie", []) if h.startswith(f"{name}="))


def make_site(tmp_path: Path) -> Path:
    """A small web root, a secret beside it and symlinks that point out of it."""
    root = tmp_path / "www"
    (root / "assets").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "index.html").write_text("<!DOCTYPE html><title>ui</title>")
    (root / "index.js").write_text("console.log('app')")
    (root / "index.css").write_text("body{}")
    (root / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
    (root / "assets" / "app-3fa2b1c9.js").write_text("/* hashed */")
    (root / "assets" / "logo.svg").write_text("<svg/>")
    (root / "font.woff2").write_bytes(b"wOF2")
    (root / "sub" / "index.html").write_text("sub page")
    (root / ".env").write_text("SECRET=1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "escape").symlink_to(outside)  # a directory symlink out of the root
    (root / "secret-link.txt").symlink_to(outside / "secret.txt")
    (root / "inside-link.js").symlink_to(root / "index.js")  # a symlink that stays inside
    return root


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Web]:
    root = make_site(tmp_path)
    config = make_config(tmp_path / "data", mounts={"/": root})
    async with running_server(config) as srv, aiohttp.ClientSession() as session:
        yield Web(srv, session, root)


# -- static files -------------------------------------------------------------------------


async def test_assets_are_served_without_a_token_with_types_and_cache_headers(web: Web) -> None:
    expected = {
        "/index.css": ("text/css; charset=utf-8", "no-cache", b"body{}"),
        "/favicon.ico": ("image/x-icon", "no-cache", b"\x00\x00\x01\x00"),
        "/assets/logo.svg": ("image/svg+xml", "no-cache", b"<svg/>"),
    }
    for path, (ctype, cache, body) in expected.items():
        async with web.session.get(web.base + path, allow_redirects=False) as resp:
            assert resp.status == 200, path
            assert resp.headers["Content-Type"] == ctype
            assert resp.headers["Cache-Control"] == cache
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["ETag"] and resp.headers["Last-Modified"]
            assert await resp.read() == body


async def test_pages_need_a_valid_token_and_are_revalidated(web: Web) -> None:
    for path in ("/", "/index.html", "/index.js", "/font.woff2", "/assets/app-3fa2b1c9.js"):
        resp = await web.request("GET", path)
        assert (resp.status, resp.headers["Location"]) == (302, "/signin"), path
    for forged in ("", "x" * 43, "not a token", token_hash("x")):
        resp = await web.request("GET", "/", cookies={"token": forged})
        assert resp.status == 302, forged
    token = await web.token()
    cookies = {"token": token}
    resp = await web.request("GET", "/", cookies=cookies)
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    etag = resp.headers["ETag"]
    again = await web.request(
        "GET", "/index.html", cookies=cookies, headers={"If-None-Match": etag}
    )
    assert again.status == 304
    js = await web.request("GET", "/index.js", cookies=cookies)
    assert js.headers["Content-Type"] == "text/javascript; charset=utf-8"
    hashed = await web.request("GET", "/assets/app-3fa2b1c9.js", cookies=cookies)
    assert hashed.status == 200
    assert hashed.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    woff = await web.request("GET", "/font.woff2", cookies=cookies)
    assert woff.headers["Content-Type"] == "font/woff2"
    head = await web.request("HEAD", "/index.js", cookies=cookies)
    assert head.status == 200 and head.headers["Content-Length"] == str(len("console.log('app')"))
    assert (await web.request("GET", "/inside-link.js", cookies=cookies)).status == 200
    # Unknown paths and other methods: 404 once signed in (a redirect before).
    for method, path in (("GET", "/nope.html"), ("GET", "/assets/nope.js"), ("POST", "/")):
        assert (await web.request(method, path, cookies=cookies)).status == 404, path
    assert (await web.request("POST", "/index.html")).status == 302
    # An expired token no longer opens the pages.
    await expire_tokens(web.server.state, time.time() - 1)
    assert (await web.request("GET", "/", cookies=cookies)).status == 302


async def test_directories_get_their_slash_then_their_index(web: Web) -> None:
    token = await web.token()
    resp = await web.request("GET", "/sub?x=1", cookies={"token": token})
    assert (resp.status, resp.headers["Location"]) == (301, "/sub/?x=1")
    resp = await web.request("GET", "/sub/", cookies={"token": token})
    assert resp.status == 200
    status, data = await web.raw_get("//sub", token)  # never a protocol-relative redirect
    assert status == 301 and b"\r\nLocation: /sub/\r\n" in data
    assert (await web.request("GET", "/assets/", cookies={"token": token})).status == 404


@pytest.mark.parametrize(
    "target",
    [
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E%2Foutside%2Fsecret.txt",
        "/assets/..%2f..%2foutside%2fsecret.txt",
        "/assets/%2e%2e/%2e%2e/outside/secret.txt",
        "/..%5coutside%5csecret.txt",
        "/escape/secret.txt",
        "/secret-link.txt",
        "/.env",
        "/%2eenv",
        "/index.html%00.txt",
        "/./index.html",
        "/sub/../../outside/secret.txt",
    ],
)
async def test_nothing_outside_the_mount_is_ever_served(web: Web, target: str) -> None:
    token = await web.token()
    status, data = await web.raw_get(target, token)
    assert status == 404, (target, status)
    assert SECRET not in data and b"SECRET=1" not in data


async def test_mount_under_a_prefix_and_gui_routes(tmp_path: Path) -> None:
    root = make_site(tmp_path)
    config = make_config(tmp_path / "data", mounts={"/v5": root})
    async with running_server(config) as srv, aiohttp.ClientSession() as session:
        web = Web(srv, session, root)
        async with session.get(srv.base + "/rest/v0/gui-routes") as resp:  # no credentials
            assert resp.status == 200 and await resp.json() == {"xo5": "/v5"}
        token = await web.token()
        resp = await web.request("GET", "/v5", cookies={"token": token})
        assert (resp.status, resp.headers["Location"]) == (301, "/v5/")
        assert (await web.request("GET", "/v5/", cookies={"token": token})).status == 200
        assert (await web.request("GET", "/v5x/index.html", cookies={"token": token})).status == 404
        assert (await web.request("GET", "/index.html", cookies={"token": token})).status == 404
    async with running_server(make_config(tmp_path / "data2")) as srv, aiohttp.ClientSession() as s:
        async with s.get(srv.base + "/rest/v0/gui-routes") as resp:
            assert await resp.json() == {}
        async with s.get(srv.base + "/", allow_redirects=False) as resp:  # no mount: still gated
            assert resp.status == 302


# -- sign-in ------------------------------------------------------------------------------


async def test_signin_page_is_self_contained(web: Web) -> None:
    async with web.session.get(web.base + "/signin") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
        page = await resp.text()
    assert '<form action="signin/local" method="post">' in page
    for field in ('name="username"', 'name="password"', 'name="remember-me" type="checkbox"'):
        assert field in page
    assert "<script" not in page and "http" not in page.split("<body>")[1]
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert 'class="error"' not in page


async def test_wrong_password_goes_back_with_the_error_and_changes_nothing(web: Web) -> None:
    before = await count_tokens(web.server.state)
    resp = await web.sign_in({"username": "admin@admin.net", "password": "wrong"})
    assert (resp.status, resp.headers["Location"]) == (303, "/signin")
    assert "token" not in set_cookies(resp)
    flash = set_cookies(resp)["xo-migrate-signin-error"]
    assert flash["path"] == "/signin" and flash["httponly"]
    async with web.session.get(
        web.base + "/signin", headers={"Cookie": f"{flash.key}={flash.value}"}
    ) as page_resp:
        page = await page_resp.text()
        assert '<p class="error" role="alert">invalid credentials</p>' in page
        assert set_cookies(page_resp)[flash.key]["max-age"] == "0"  # shown once
    # A forged error cookie shows nothing it chose.
    async with web.session.get(
        web.base + "/signin", headers={"Cookie": "xo-migrate-signin-error=<b>pwned</b>"}
    ) as page_resp:
        assert "pwned" not in await page_resp.text()
    assert await count_tokens(web.server.state) == before


async def test_malformed_and_huge_forms(web: Web) -> None:
    for kw, error in (
        ({"data": {}}, "missing"),
        ({"data": {"username": "admin@admin.net"}}, "missing"),
        ({"data": {"username": "admin@admin.net", "password": ""}}, "missing"),
        ({"json": ADMIN}, "missing"),  # not a form: read as empty
        # Bad UTF-8 escapes decode to U+FFFD, as Node's querystring does: nobody's password.
        ({"data": b"username=%ff%fe&password=%ff", "headers": _urlencoded()}, "invalid"),
    ):
        resp = await web.request("POST", "/signin/local", **kw)
        assert (resp.status, resp.headers["Location"]) == (303, "/signin"), kw
        assert set_cookies(resp)["xo-migrate-signin-error"].value == error
    huge = b"username=admin%40admin.net&password=admin&x=" + b"a" * MAX_FORM_BYTES
    resp = await web.request("POST", "/signin/local", data=huge, headers=_urlencoded())
    assert resp.status == 413 and "Set-Cookie" not in resp.headers

    async def slowly(body: bytes) -> AsyncIterator[bytes]:  # chunked: no Content-Length
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]
            await asyncio.sleep(0)

    resp = await web.request("POST", "/signin/local", data=slowly(huge), headers=_urlencoded())
    assert resp.status == 413 and "Set-Cookie" not in resp.headers
    assert await count_tokens(web.server.state) == 0
    form = b"pad=" + b"p" * 50_000 + b"&username=admin%40admin.net&password=admin"
    resp = await web.request("POST", "/signin/local", data=slowly(form), headers=_urlencoded())
    assert (resp.status, resp.headers["Location"]) == (303, "/")  # read whole, in pieces
    assert await count_tokens(web.server.state) == 1


def _urlencoded() -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded"}


async def test_sign_in_sets_the_cookies_xo_web_reads_and_the_token_works(web: Web) -> None:
    resp = await web.sign_in()
    assert (resp.status, resp.headers["Location"]) == (303, "/")
    jar = set_cookies(resp)
    token, client_id = jar["token"], jar["clientId"]
    raw = raw_set_cookie(resp, "token").lower()
    assert "httponly" not in raw and "expires" not in raw and "max-age" not in raw  # session
    assert "samesite=lax" in raw and "path=/" in raw and "secure" not in raw  # plain http
    assert client_id["httponly"] and int(client_id["max-age"]) >= 10 * 365 * 86400
    rec = await web.server.state.storage.token(token_hash(token.value))
    assert rec is not None and rec.description == UA and rec.client_id == client_id.value
    assert rec.expiration - rec.created_at == pytest.approx(10 * 3600, abs=5)
    # The token signs the WebSocket in (what xo-web does with the cookie) ...
    client = await XoClient.connect(web.server.ws_url)
    assert (await client.call("session.signIn", {"token": token.value}))["permission"] == "admin"
    await client.close()
    # ... and POST /api/ and the REST API accept the cookie itself.
    call = {"id": 1, "jsonrpc": "2.0", "method": "server.getAll"}
    async with web.session.post(
        web.base + "/api/", json=call, headers={"Cookie": f"token={token.value}"}
    ) as api_resp:
        assert (await api_resp.json())["result"] == []
    async with web.session.get(
        web.base + "/rest/v0/vms", headers={"Cookie": f"token={token.value}"}
    ) as rest_resp:
        assert rest_resp.status == 200
    # The same browser (clientId) signing in again gets its token back, refreshed.
    again = await web.sign_in(cookies={"clientId": client_id.value})
    assert set_cookies(again)["token"].value == token.value
    assert "clientId" not in set_cookies(again)
    # A forged clientId is replaced, not stored.
    forged = await web.sign_in(cookies={"clientId": "x" * 500})
    assert set_cookies(forged)["clientId"].value != "x" * 500


async def test_remember_me_makes_the_cookie_last_as_long_as_its_token(web: Web) -> None:
    resp = await web.sign_in({**ADMIN, "remember-me": "on"})
    jar = set_cookies(resp)
    rec = await web.server.state.storage.token(token_hash(jar["token"].value))
    assert rec is not None
    assert rec.expiration - rec.created_at == pytest.approx(30 * 86400, abs=5)
    expires = time.mktime(time.strptime(jar["token"]["expires"], "%a, %d %b %Y %H:%M:%S GMT"))
    assert expires - time.timezone == pytest.approx(rec.expiration, abs=2)


async def test_the_gate_remembers_the_url_and_returns_there_only_on_site(web: Web) -> None:
    resp = await web.request("GET", "/index.html?view=vms&id=42")
    assert resp.status == 302
    remembered = set_cookies(resp)[RETURN_COOKIE]
    assert remembered["path"] == "/signin" and remembered["httponly"]
    # A failed try keeps it; the sign-in returns there and forgets it.
    cookies = {RETURN_COOKIE: remembered.value}
    failed = await web.sign_in({"username": "admin@admin.net", "password": "no"}, cookies)
    assert RETURN_COOKIE not in set_cookies(failed)
    await asyncio.sleep(0.35)  # the test config's throttling delay
    resp = await web.sign_in(cookies=cookies)
    assert (resp.status, resp.headers["Location"]) == (303, "/index.html?view=vms&id=42")
    assert set_cookies(resp)[RETURN_COOKIE]["max-age"] == "0"
    # Forged return URLs: never off-site.
    for forged in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/a\r\nb"):
        await asyncio.sleep(0.01)
        resp = await web.sign_in(cookies={RETURN_COOKIE: quote(forged, safe="")})
        assert resp.headers["Location"] == "/", forged
    assert safe_return_url("/signin") is None and safe_return_url("/a?b=c") == "/a?b=c"


async def test_signin_with_an_existing_token_and_sign_out(web: Web) -> None:
    state = web.server.state
    user = next(u for u in [await state.storage.user_by_email("admin@admin.net")] if u)
    token = await state.auth.create_token(user, expires_in="2 days")
    resp = await web.request("GET", f"/signin?token={token}")
    assert (resp.status, resp.headers["Location"]) == (303, "/")
    cookie = set_cookies(resp)["token"]
    assert cookie.value == token and cookie["expires"]  # persistent: expires with the token
    for bad in ("nope", ""):
        resp = await web.request("GET", f"/signin?token={bad}")
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
        async with web.session.get(web.base + f"/signin?token={bad}") as page:
            assert "invalid credentials" in await page.text()
    resp = await web.request("GET", "/signout", cookies={"token": token})
    assert (resp.status, resp.headers["Location"]) == (302, "/")
    cleared = set_cookies(resp)["token"]
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/"


async def test_web_sign_in_is_throttled_with_the_websocket(web: Web) -> None:
    client = await XoClient.connect(web.server.ws_url)
    response = await client.request(
        "session.signIn", {"email": "admin@admin.net", "password": "wrong"}
    )
    assert response["error"]["code"] == 3
    await client.close()
    resp = await web.sign_in()  # right password, too soon after the failure
    assert (resp.status, resp.headers["Location"]) == (303, "/signin")
    assert set_cookies(resp)["xo-migrate-signin-error"].value == "throttled"
    async with web.session.get(
        web.base + "/signin", headers={"Cookie": "xo-migrate-signin-error=throttled"}
    ) as page:
        assert "too fast authentication tries" in await page.text()
    await asyncio.sleep(0.35)
    assert (await web.sign_in()).headers["Location"] == "/"


async def test_cookies_are_secure_over_tls(tmp_path: Path) -> None:
    from server.app import ssl_context
    from xen.sim.certs import HostCertificates

    certs = HostCertificates()
    cert = await asyncio.to_thread(certs.get, "127.0.0.1")
    config = make_config(
        tmp_path / "data",
        mounts={"/": make_site(tmp_path)},
        cert_file=str(cert.cert_file),
        key_file=str(cert.key_file),
    )
    client_ctx = ssl.create_default_context(cafile=str(cert.cert_file))
    client_ctx.check_hostname = False
    try:
        async with (
            running_server(config, ssl_context=ssl_context(config)) as srv,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as session,
        ):
            assert srv.base.startswith("https://")
            web = Web(srv, session, tmp_path / "www")
            gate = await web.request("GET", "/index.html")
            assert "secure" in raw_set_cookie(gate, RETURN_COOKIE).lower()
            resp = await web.sign_in()
            for name in ("token", "clientId"):
                assert "; secure" in raw_set_cookie(resp, name).lower(), name
            failed = await web.sign_in({"username": "admin@admin.net", "password": "no"})
            assert "; secure" in raw_set_cookie(failed, "xo-migrate-signin-error").lower()
    finally:
        await asyncio.to_thread(certs.close)


async def test_a_sign_in_form_posted_by_another_site_is_refused(web: Web) -> None:
    """Login CSRF: a page elsewhere must not sign the browser in as someone (an attacker's
    account, say); a form the browser posts carries the page's Origin."""
    before = await count_tokens(web.server.state)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        resp = await web.request(
            "POST", "/signin/local", data=ADMIN, headers={**_urlencoded(), **headers}
        )
        assert (resp.status, resp.headers["Location"]) == (303, "/signin")
        assert "token" not in set_cookies(resp)
    assert await count_tokens(web.server.state) == before
    # The page's own form (same origin) signs in.
    resp = await web.request(
        "POST", "/signin/local", data=ADMIN, headers={**_urlencoded(), "Origin": web.base}
    )
    assert resp.status == 303 and "token" in set_cookies(resp)
