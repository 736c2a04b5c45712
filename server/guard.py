"""Connection limits: no client may hold the server's sockets, file descriptors or handlers.

aiohttp closes idle keep-alive connections (`keepalive_timeout`), but has no cap on
connections and, depending on its version, no deadline for the first request's head. So the
listening socket is served through `GuardedSite`, whose protocol sits in front of aiohttp's:

- a cap on connections in total (`max_connections`, and always some file descriptors below
  the process's open-file limit, so `accept()` never fails with EMFILE) and per client address
  (`max_connections_per_address`; an IPv6 /64 is one client, server/netaddr.py). A connection
  over a cap is closed at once, before any byte is read;
- a deadline for the TLS handshake plus the first request's head (`header_timeout`, met when
  the head's blank line arrives): silent connections and slowloris heads are closed. TLS is
  started by the guard itself (asyncio's `start_tls`), after the caps, so handshakes in
  progress count against them too;
- after that, aiohttp's keep-alive timeout bounds idle connections and the heads of later
  requests; request bodies are read within `body_timeout` (server/http_body.py); WebSockets
  have heartbeats and a deadline to sign in (server/websocket.py).

Refusals are logged as `event=connection_refused`; repeated lines are rate-limited by the
log filter (server/logfilter.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from server.netaddr import TrustedProxies, client_key

log = logging.getLogger("xo_migrate.guard")

# File descriptors kept free for everything but client connections (pools, SQLite, logs...).
FD_RESERVE = 128
_MAX_EARLY_BYTES = 64 * 1024  # buffered while a TLS handshake completes


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 10_000
    max_connections_per_address: int = 256
    header_timeout_s: float = 10.0  # TLS handshake + first request head
    keepalive_timeout_s: float = 15.0  # idle HTTP keep-alive connection
    body_timeout_s: float = 60.0  # to receive a whole request body
    backlog: int = 1024  # pending connections the kernel queues for accept()
    websocket_heartbeat_s: float = 30.0  # ping period; no pong within half of it: closed
    unauthenticated_timeout_s: float = 60.0  # a WebSocket must sign in within this


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (systemd's default soft limit of 1024
    is far below what a server needs); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ConnectionGuard:
    """The counts and deadlines of one server's connections (shared by its sites)."""

    def __init__(self, limits: ConnectionLimits, proxies: TrustedProxies | None = None) -> None:
        self.limits = limits
        # A trusted reverse proxy carries many clients: only the total caps it (limit each
        # client in the proxy, e.g. nginx's limit_conn).
        self.proxies = proxies or TrustedProxies()
        self.total = 0
        self.per_address: dict[str, int] = {}

    @property
    def max_connections(self) -> int:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.limits.max_connections
        return max(1, min(self.limits.max_connections, soft - FD_RESERVE))

    def admit(self, key: str, *, proxy: bool = False) -> str | None:
        """Count one more connection for `key` (`proxy`: from a trusted proxy), or say why
        not."""
        if self.total >= self.max_connections:
            return "max_connections"
        count = self.per_address.get(key, 0)
        if not proxy and count >= self.limits.max_connections_per_address:
            return "max_connections_per_address"
        self.total += 1
        self.per_address[key] = count + 1
        return None

    def release(self, key: str) -> None:
        self.total -= 1
        left = self.per_address.get(key, 1) - 1
        if left > 0:
            self.per_address[key] = left
        else:
            self.per_address.pop(key, None)


class _GuardedProtocol(asyncio.Protocol):
    """In front of one aiohttp RequestHandler: admission, TLS, the first-head deadline."""

    __slots__ = (
        "_early",
        "_guard",
        "_head_tail",
        "_inner",
        "_key",
        "_lost",
        "_make_inner",
        "_site",
        "_timer",
        "_transport",
    )

    def __init__(self, site: GuardedSite, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self._site = site
        self._guard = site.guard
        self._make_inner = make_inner
        self._inner: Any = None
        self._key: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._transport: Any = None
        self._early = b""
        self._head_tail = b""
        self._lost = False

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        key = client_key(address) if address is not None else "?"
        refused = self._guard.admit(key, proxy=self._guard.proxies.trusts(address))
        if refused is not None:
            log.warning("event=connection_refused remote=%s reason=%s", key, refused)
            transport.abort()
            return
        self._key = key
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout_s, self._too_slow)
        if self._site.tls is None:
            self._start(transport)
        else:
            self._site.spawn(self._handshake(transport))

    async def _handshake(self, transport: Any) -> None:
        loop = asyncio.get_running_loop()
        assert self._site.tls is not None
        try:
            tls = await loop.start_tls(
                transport,
                self,
                self._site.tls,
                server_side=True,
                ssl_handshake_timeout=self._guard.limits.header_timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("event=tls_handshake_failed remote=%s error=%r", self._key, exc)
            transport.abort()
            self._closed()
            return
        except asyncio.CancelledError:
            transport.abort()
            self._closed()
            raise
        if tls is None or self._lost:
            self._closed()
            return
        self._start(tls)

    def _start(self, transport: Any) -> None:
        if self._lost:
            return
        self._transport = transport
        self._inner = self._make_inner()
        self._inner.connection_made(transport)
        if self._early:
            early, self._early = self._early, b""
            self._inner.data_received(early)

    def _watch_head(self, data: bytes) -> None:
        """The first request head is complete at its blank line: then its deadline is off.
        Only the end of the previous chunk matters for a blank line split across two."""
        seen = self._head_tail + data
        if b"\r\n\r\n" in seen or b"\n\n" in seen:
            self._head_tail = b""
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        else:
            self._head_tail = seen[-3:]

    def _too_slow(self) -> None:
        self._timer = None
        log.info("event=connection_timeout remote=%s state=before_request", self._key)
        transport = self._transport
        if transport is not None:
            transport.abort()
        # During a TLS handshake, `start_tls`'s own timeout (the same) closes it.

    # -- forwarded to aiohttp ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._watch_head(data)
        inner = self._inner
        if inner is not None:
            inner.data_received(data)
        elif len(self._early) + len(data) <= _MAX_EARLY_BYTES:
            self._early += data  # TLS just completed; the handler starts on the next tick
        elif self._transport is not None:
            self._transport.abort()

    def eof_received(self) -> bool | None:
        inner = self._inner
        return inner.eof_received() if inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        inner, self._inner = self._inner, None
        self._closed()
        if inner is not None:
            inner.connection_lost(exc)

    def _closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._key is not None:
            self._guard.release(self._key)
            self._key = None


class GuardedSite(web.TCPSite):
    """`web.TCPSite` whose connections go through the runner's app's ConnectionGuard."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None,
        port: int | None,
        *,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=guard.limits.backlog)
        self.guard = guard
        self.tls = ssl_context
        self._handshakes: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _GuardedProtocol(self, server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._port == 0:
            self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await super().stop()
        tasks = list(self._handshakes)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def make_runner(app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> web.AppRunner:
    """An AppRunner whose handlers close idle keep-alive connections after the configured time."""
    return web.AppRunner(app, keepalive_timeout=limits.keepalive_timeout_s, **kwargs)
