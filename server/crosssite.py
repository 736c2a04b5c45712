"""Refusing cross-site requests that ride on the browser's cookie (CSRF).

A page on another site can make a signed-in user's browser POST to us with the cookie
attached, as long as the request is "simple" (a form, or `fetch` with a `text/plain` body):
no CORS preflight happens, so the browser never asks us first. Such a request is refused when
it is authenticated by a cookie and either

- says it comes from another origin: `Origin` is not this server's own (scheme, host and port
  as the request reached us) nor one of `allowed_origins`, `Origin: null` included; or
  `Sec-Fetch-Site` is `cross-site` / `same-site` with no acceptable `Origin`; or
- (`require_json`) it has a body that is not `application/json`: a cross-site page cannot
  send that type without a preflight, which we never approve. (A POST without a body, as
  `xo-cli rest post .../actions/abort`, carries nothing to forge; its `Origin` is checked.)

Requests authenticated otherwise (`Authorization` header, a token in the message) cannot be
forged this way and are not checked. The cookies set by /signin carry `SameSite=Lax` as a
second line of defence.

Usage, in a handler that authenticates with a cookie::

    reason = cross_site_refusal(request, allowed_origins)
    if reason is not None:
        return <403 with reason>
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

_SAFE_FETCH_SITES = frozenset({"same-origin", "none"})


def own_origin(request: web.Request) -> str:
    """This server's origin as the client addressed it (scheme://host[:port], lower-case)."""
    return f"{request.scheme}://{request.host}".lower()


def cross_site_refusal(
    request: web.Request, allowed_origins: Collection[str] = (), *, require_json: bool = True
) -> str | None:
    """Why this cookie-authenticated request must be refused, or None if it may go on."""
    origin = request.headers.get("Origin")
    if origin is not None:
        origin = origin.strip().lower().rstrip("/")
        if origin != own_origin(request) and origin not in _normalized(allowed_origins):
            return f"cross-origin request from {origin[:100]} refused"
    else:
        fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        if fetch_site and fetch_site not in _SAFE_FETCH_SITES:
            return f"cross-site request ({fetch_site}) refused"
    if require_json and request.body_exists and request.content_type != "application/json":
        return (
            "a request authenticated by cookie must have Content-Type: application/json"
            f" (got {request.content_type[:100] or 'none'})"
        )
    return None


def _normalized(origins: Collection[str]) -> set[str]:
    return {o.strip().lower().rstrip("/") for o in origins}
