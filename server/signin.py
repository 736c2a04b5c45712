"""The browser sign-in of xo-server, in front of the mounted web UI (../shared/xo-web/README.md).

    GET  /signin             the sign-in page (plain HTML + CSS), with the last error if any;
                             `?token=T` signs in with an existing token instead
    POST /signin/local       the form: `username`, `password`, `remember-me` (= "on")
    GET  /signout            clears the `token` cookie, 302 to /
    *    anything else       the gate of the mounted directories (server/static.py): assets
                             pass, other URLs need a valid `token` cookie, else 302 to /signin

A successful sign-in creates a token through the same Authenticator entry point as
`session.signIn` (so its throttling applies, keyed by the client address it is given),
described by the browser's User-Agent and bound to a long-lived `clientId` cookie (a browser
signing in again gets its token back, refreshed, as xo-cli does), valid
`session_cookie_validity` (10 hours), or `permanent_cookie_validity` (30 days) with
remember-me. The `token` cookie is read by xo-web's JavaScript: not HttpOnly; a session cookie
unless remember-me, then it expires with the token; SameSite=Lax; Secure over TLS. Then 303 to
the URL the gate remembered, or /.

xo-server keeps its "flash" (the URL to return to, the last error) in a server-side session;
here they are two short-lived HttpOnly cookies scoped to /signin. Both are checked when read,
as cookies can be forged: only a same-site path (`/...`, never `//` or a scheme) is ever
returned to (no open redirect), and an error is a code from a fixed list, never text.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import secrets
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote

from aiohttp import web

from server.auth import AuthError, token_hash
from server.crosssite import cross_site_refusal
from server.errors import XoError

if TYPE_CHECKING:
    from server.state import ServerState
    from server.static import StaticFiles

log = logging.getLogger("xo_migrate.signin")

TOKEN_COOKIE = "token"
CLIENT_ID_COOKIE = "clientId"
RETURN_COOKIE = "xo-migrate-return-url"
ERROR_COOKIE = "xo-migrate-signin-error"
_FLASH_PATH = "/signin"
_FLASH_MAX_AGE_S = 3600
_CLIENT_ID_MAX_AGE_S = 10 * 365 * 86400  # no reason for it to ever expire (xo-server: 10 years)
_CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_FORM_BYTES = 100 * 1024  # body-parser's default limit in xo-server: bigger is 413
_MAX_RETURN_URL = 2048

# What needs no token, as xo-server's UNCHECKED_URL_RE (tested on the raw URL, query included).
_UNCHECKED_URL = re.compile(
    r"^/rest/|^/openmetrics/|favicon|manifest\.webmanifest|fontawesome|images|styles"
    r"|\.(?:css|jpg|png|svg)$"
)

# The only errors the page shows (xo-server shows error.message: these are its words).
_ERRORS = {
    "invalid": "invalid credentials",
    "throttled": "too fast authentication tries",
    "missing": "Missing credentials",
    "cross_site": "sign-in refused: the form was not sent by this site",
    "tokens": "too many sessions for this user: sign out of some first",
}


@dataclass(slots=True)
class SignInSettings:
    session_cookie_validity_ms: float = 10 * 3600e3
    permanent_cookie_validity_ms: float = 30 * 86400e3


def safe_return_url(url: str | None) -> str | None:
    """`url` if it is a same-site path worth returning to, else None."""
    if not url or len(url) > _MAX_RETURN_URL or not url.startswith("/") or url.startswith("//"):
        return None
    if any(c == "\\" or not 0x20 < ord(c) < 0x7F for c in url):
        return None
    path = url.split("?", 1)[0]
    if path in ("/signin", "/signout") or path.startswith("/signin/"):
        return None
    return url


class WebSignIn:
    """The handlers; `register` adds their routes to the app."""

    def __init__(self, state: ServerState, files: StaticFiles) -> None:
        self._state = state
        self._files = files
        self._settings = state.config.signin

    def register(self, app: web.Application) -> None:
        app.router.add_get("/signin", self.signin_page)
        app.router.add_post("/signin/local", self.signin_local)
        app.router.add_get("/signout", self.signout)
        # Last resort: every URL no other route took (aiohttp tries the longest prefix first).
        app.router.add_route("*", "/{tail:.*}", self.gate)

    # -- the gate ----------------------------------------------------------------------------

    async def gate(self, request: web.Request) -> web.StreamResponse:
        url = request.raw_path
        if _UNCHECKED_URL.search(url) or await self._valid_token(request.cookies.get(TOKEN_COOKIE)):
            return await self._files.serve(request)
        response = _redirect(302, "/signin")
        remembered = safe_return_url(url)
        if remembered is not None:
            _set_flash(response, RETURN_COOKIE, quote(remembered, safe=""), request.secure)
        return response

    async def _valid_token(self, token: str | None) -> bool:
        """Read only (no `last_uses` update, no log line): assets are fetched by the dozen."""
        if not token:
            return False
        rec = await self._state.storage.token(token_hash(token))
        return (
            rec is not None
            and not rec.expired()
            and await self._state.auth.user(rec.user_id) is not None
        )

    # -- sign in and out ---------------------------------------------------------------------

    async def signin_page(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is not None:
            return await self._signin_with_token(request, token)
        code = request.cookies.get(ERROR_COOKIE)
        response = _page(_ERRORS.get(code or ""))
        if code is not None:
            response.del_cookie(ERROR_COOKIE, path=_FLASH_PATH)
        return response

    async def _signin_with_token(self, request: web.Request, token: str) -> web.StreamResponse:
        try:
            _user, expiration = await self._state.auth.authenticate_token(token, _remote(request))
        except XoError:
            return _page(_ERRORS["invalid"])
        # xo-server treats this sign-in as persistent: the cookie expires with the token.
        return self._signed_in(request, token, expiration)

    async def signin_local(self, request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_FORM_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, request.content_length or 0)
        # A sign-in form posted by another site's page (login CSRF) is refused.
        if cross_site_refusal(request, self._state.config.allowed_origins, require_json=False):
            return _back_to_signin(request, "cross_site")
        try:
            async with asyncio.timeout(self._state.config.connections.body_timeout_s):
                form = await _read_form(request)
        except TimeoutError:
            raise web.HTTPRequestTimeout() from None
        username, password = form.get("username", ""), form.get("password", "")
        remote = _remote(request)
        if not username or not password:
            return _back_to_signin(request, "missing")
        try:
            user, _ = await self._state.auth.sign_in(
                {"username": username, "password": password}, remote
            )
        except (XoError, AuthError) as exc:
            throttled = isinstance(exc, AuthError) and (
                "too fast" in str(exc) or "in progress" in str(exc)
            )
            return _back_to_signin(request, "throttled" if throttled else "invalid")
        persistent = form.get("remember-me") == "on"
        validity_ms = (
            self._settings.permanent_cookie_validity_ms
            if persistent
            else self._settings.session_cookie_validity_ms
        )
        client_id = request.cookies.get(CLIENT_ID_COOKIE, "")
        new_client = _CLIENT_ID_RE.fullmatch(client_id) is None
        if new_client:
            client_id = secrets.token_urlsafe(12)
        try:
            token = await self._state.auth.create_token(
                user,
                description=request.headers.get("User-Agent") or "unknown browser",
                client_id=client_id,
                expires_in=validity_ms,
            )
        except XoError:  # the user's token quota is full
            return _back_to_signin(request, "tokens")
        rec = await self._state.storage.token(token_hash(token))
        expiration = rec.expiration if persistent and rec is not None else None
        log.info(
            "event=web_sign_in user=%s remote=%s persistent=%s", user.email, remote, persistent
        )
        response = self._signed_in(request, token, expiration)
        if new_client:
            response.set_cookie(
                CLIENT_ID_COOKIE,
                client_id,
                max_age=_CLIENT_ID_MAX_AGE_S,
                path="/",
                samesite="Lax",
                httponly=True,
                secure=request.secure or None,
            )
        return response

    def _signed_in(
        self, request: web.Request, token: str, expiration: float | None
    ) -> web.StreamResponse:
        """Set the `token` cookie (expiring at `expiration`, or a session cookie) and go back
        to the URL remembered by the gate."""
        remembered = safe_return_url(unquote(request.cookies.get(RETURN_COOKIE, "")))
        response = _redirect(303, remembered or "/")
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            expires=None if expiration is None else _http_date(expiration),
            path="/",
            samesite="Lax",
            secure=request.secure or None,
            httponly=None,  # xo-web reads it in JavaScript
        )
        if RETURN_COOKIE in request.cookies:
            response.del_cookie(RETURN_COOKIE, path=_FLASH_PATH)
        return response

    async def signout(self, request: web.Request) -> web.StreamResponse:
        response = _redirect(302, "/")
        response.del_cookie(TOKEN_COOKIE, path="/", samesite="Lax")
        return response


async def _read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded form (first value of each field); anything else reads as empty, as
    body-parser leaves req.body empty for other content types."""
    if request.content_type != "application/x-www-form-urlencoded":
        return {}
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():  # chunked bodies have no Content-Length
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, size)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        text = body.decode("ascii")  # urlencoded: anything else is escaped
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def _back_to_signin(request: web.Request, code: str) -> web.StreamResponse:
    response = _redirect(303, "/signin")
    _set_flash(response, ERROR_COOKIE, code, request.secure)
    return response


def _set_flash(response: web.StreamResponse, name: str, value: str, secure: bool) -> None:
    response.set_cookie(
        name,
        value,
        max_age=_FLASH_MAX_AGE_S,
        path=_FLASH_PATH,
        samesite="Lax",
        httponly=True,
        secure=secure or None,
    )


def _remote(request: web.Request) -> str:
    return request.remote or "?"


def _http_date(epoch_s: float) -> str:
    return formatdate(epoch_s, usegmt=True)


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


_STYLE = """
body { margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center;
  background: #f4f6f8; color: #222; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { width: 20em; padding: 2em; background: #fff; border-radius: 6px;
  box-shadow: 0 1px 4px rgba(0, 0, 0, .15); }
h1 { margin: 0 0 1em; font-size: 1.4em; text-align: center; }
label { display: block; margin-bottom: .8em; }
input[type=text], input[type=password] { box-sizing: border-box; width: 100%; margin-top: .2em;
  padding: .5em; border: 1px solid #bbb; border-radius: 4px; font: inherit; }
.remember { display: flex; gap: .5em; align-items: center; }
button { width: 100%; padding: .6em; border: 0; border-radius: 4px; background: #1b6ec2;
  color: #fff; font: inherit; cursor: pointer; }
.error { margin: 0 0 1em; padding: .6em; border-radius: 4px; background: #fdecea; color: #a12622; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - xo-migrate</title>
<style>{style}</style>
</head>
<body>
<main>
<h1>xo-migrate</h1>
{error}<form action="signin/local" method="post">
<label>Username <input name="username" type="text" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<label class="remember"><input name="remember-me" type="checkbox"> Remember me</label>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""

# Nothing external, no script; the page cannot be framed (clickjacking) nor post elsewhere.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _page(error: str | None) -> web.Response:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else ""
    return web.Response(
        text=_PAGE.format(style=_STYLE, error=shown),
        content_type="text/html",
        charset="utf-8",
        headers=_PAGE_HEADERS,
    )
