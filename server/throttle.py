"""Sign-in throttling: the attacker slows down, the victim does not.

Attempts are keyed by (email, client) and by client, where a client is an address
(server/netaddr.py); nothing is keyed by email alone, so failures sent from one place never
lock the account's owner out from another.

- (email, client): one password check at a time; concurrent attempts wait in line. After a
  failure the pair is refused ("too fast authentication tries") for `delay_s`, and so are the
  attempts already waiting: 41 guesses sent at once (one WebSocket, one POST batch, 41 REST
  requests) cost one check. An attempt whose password is the one that succeeded for the pair
  in the last `REMEMBER_S` seconds (compared as an HMAC under a per-process key, and only while
  the stored hash is unchanged) succeeds without a check: many connections opened at once by
  one client cost one hash.
- client: at most `checks_per_address` checks in flight (others wait, at most
  `waiting_per_address` of them), and a budget of `failures_per_address` failures refilled at
  one per `delay_s`, so spraying many emails from one address slows down too.
- Memory stays bounded: idle entries are swept once the tables grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from server.netaddr import client_key

REMEMBER_S = 10.0
_SWEEP_FLOOR = 1024


class Throttled(Exception):
    """Refused without checking the password."""


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    delay_s: float = 2.0
    checks_per_address: int = 1
    failures_per_address: int = 10
    waiting_per_address: int = 64


class _Pair:
    __slots__ = ("failed_at", "lock", "ok_at", "ok_hash", "ok_mac", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.failed_at = -math.inf
        self.ok_mac = b""
        self.ok_hash: str | None = None
        self.ok_at = -math.inf
        self.users = 0  # attempts holding or waiting for this entry


class _Client:
    __slots__ = ("slots", "tokens", "updated", "users", "waiting")

    def __init__(self, checks: int, failures: int, now: float) -> None:
        self.slots = asyncio.Semaphore(checks)
        self.tokens = float(failures)
        self.updated = now
        self.users = 0
        self.waiting = 0


class Attempt:
    """One admitted sign-in attempt: `verified` when no check is needed; the caller reports
    the outcome of its check with `failed()` or `succeeded(stored hash)`."""

    __slots__ = ("_client", "_mac", "_pair", "_throttle", "verified")

    def __init__(
        self, throttle: SignInThrottle, pair: _Pair, client: _Client, mac: bytes, verified: bool
    ) -> None:
        self._throttle, self._pair, self._client, self._mac = throttle, pair, client, mac
        self.verified = verified

    def failed(self) -> None:
        self._pair.failed_at = self._throttle.clock()
        self._client.tokens -= 1.0

    def succeeded(self, stored_hash: str) -> None:
        pair = self._pair
        pair.failed_at = -math.inf
        pair.ok_mac, pair.ok_hash, pair.ok_at = self._mac, stored_hash, self._throttle.clock()


class SignInThrottle:
    def __init__(
        self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._clients: dict[str, _Client] = {}
        self._sweep_at = _SWEEP_FLOOR

    @contextlib.asynccontextmanager
    async def attempt(
        self, email: str, address: str, password: str, stored: str | None
    ) -> AsyncIterator[Attempt]:
        """Admit one attempt (or raise Throttled); `stored` is the user's current hash."""
        client_id = client_key(address)
        pair, client = self._entries(email, client_id)
        pair.users += 1
        client.users += 1
        try:
            mac = hmac.new(self._key, password.encode(), hashlib.sha256).digest()
            self._admit(pair, client)
            if self._remembers(pair, mac, stored):
                yield Attempt(self, pair, client, mac, True)
                return
            async with self._in_line(client, pair.lock):
                self._admit(pair, client)  # a failure may have come in while waiting
                if self._remembers(pair, mac, stored):
                    yield Attempt(self, pair, client, mac, True)
                    return
                async with self._in_line(client, client.slots):
                    self._admit(pair, client)
                    yield Attempt(self, pair, client, mac, False)
        finally:
            pair.users -= 1
            client.users -= 1

    def _admit(self, pair: _Pair, client: _Client) -> None:
        now = self.clock()
        settings = self.settings
        if now - pair.failed_at < settings.delay_s:
            raise Throttled("pair")
        if client.tokens < settings.failures_per_address:
            refill = (now - client.updated) / settings.delay_s if settings.delay_s > 0 else math.inf
            client.tokens = min(float(settings.failures_per_address), client.tokens + refill)
        client.updated = now
        if client.tokens < 1.0:
            raise Throttled("address")

    def _remembers(self, pair: _Pair, mac: bytes, stored: str | None) -> bool:
        return (
            stored is not None
            and stored == pair.ok_hash
            and self.clock() - pair.ok_at < REMEMBER_S
            and hmac.compare_digest(mac, pair.ok_mac)
        )

    @contextlib.asynccontextmanager
    async def _in_line(
        self, client: _Client, lock: asyncio.Lock | asyncio.Semaphore
    ) -> AsyncIterator[None]:
        if lock.locked():
            if client.waiting >= self.settings.waiting_per_address:
                raise Throttled("line")
            client.waiting += 1
            try:
                await lock.acquire()
            finally:
                client.waiting -= 1
        else:
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _entries(self, email: str, client_id: str) -> tuple[_Pair, _Client]:
        if len(self._pairs) + len(self._clients) >= self._sweep_at:
            self._sweep()
        pair = self._pairs.get((email, client_id))
        if pair is None:
            pair = self._pairs[(email, client_id)] = _Pair()
        client = self._clients.get(client_id)
        if client is None:
            s = self.settings
            client = self._clients[client_id] = _Client(
                max(1, s.checks_per_address), s.failures_per_address, self.clock()
            )
        return pair, client

    def _sweep(self) -> None:
        """Forget entries that no attempt uses and that remember nothing still in force."""
        now, s = self.clock(), self.settings
        self._pairs = {
            k: p
            for k, p in self._pairs.items()
            if p.users or now - p.failed_at < s.delay_s or now - p.ok_at < REMEMBER_S
        }
        full_after = s.delay_s * s.failures_per_address
        self._clients = {
            k: c for k, c in self._clients.items() if c.users or now - c.updated < full_after
        }
        self._sweep_at = max(_SWEEP_FLOOR, 2 * (len(self._pairs) + len(self._clients)))

    def __len__(self) -> int:
        return len(self._pairs) + len(self._clients)
