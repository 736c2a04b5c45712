"""The client's address behind a trusted reverse proxy, for every handler.

With `[http] trusted_proxies` set, a request from one of them gets the address its
`X-Forwarded-For` names (server/netaddr.py `TrustedProxies`) as `request.remote`: the sign-in
throttle, per-address limits and logs then see clients, not the proxy. Without it the
middleware is not installed and the header is never read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from server.netaddr import TrustedProxies

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forwarded_client_middleware(
    proxies: TrustedProxies,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def forwarded_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = proxies.client_of(request.remote, request.headers.get("X-Forwarded-For"))
        if client is not None and client != request.remote:
            request = request.clone(remote=client)
        return await handler(request)

    return forwarded_client
