"""Password hashing: scrypt at OWASP's cost, in a bounded pool of worker threads.

- Stored as `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`. A hash made with other parameters
  (the weaker N=2^14 of older versions) still verifies, and `verify` then returns a new hash
  with the current parameters: the sign-in stores it (transparent rehash).
- Default cost: N=2^17, r=8, p=1, OWASP's Password Storage Cheat Sheet minimum for scrypt
  (128 MiB and about half a second of one core per hash).
- Hashing never runs on the event loop, nor in the default executor that DNS and file I/O
  share: `PasswordHasher` has its own `max_concurrent` threads and lets at most `max_pending`
  more checks wait for them; past that a check is refused at once (`HasherBusy`), so a flood
  of sign-ins costs a bounded amount of CPU and memory and never queues for minutes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_SCRYPT_N = 2**17
_MAX_N = 2**20  # refuse to verify against absurd stored parameters (1 GiB of memory)


@dataclass(frozen=True, slots=True)
class ScryptParams:
    n: int = DEFAULT_SCRYPT_N
    r: int = 8
    p: int = 1


class HasherBusy(Exception):
    """Too many password checks are already running or waiting."""


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = 64) -> bytes:
    # OpenSSL needs 128 * r * (n + p) bytes and a little more: allow that much, no more.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def hash_password(password: str, params: ScryptParams | None = None) -> str:
    params = params or ScryptParams()
    salt = os.urandom(16)
    digest = _scrypt(password, salt, params.n, params.r, params.p)
    b64 = base64.b64encode
    return f"scrypt${params.n}${params.r}${params.p}${b64(salt).decode()}${b64(digest).decode()}"


def _parse(stored: str) -> tuple[ScryptParams, bytes, bytes] | None:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return None
        params = ScryptParams(int(n), int(r), int(p))
        return params, base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:
        return None


def verify_password(password: str, stored: str) -> bool:
    parsed = _parse(stored)
    if parsed is None:
        return False
    params, salt, expected = parsed
    if params.n > _MAX_N or params.r * params.p >= 2**30:
        return False
    try:
        actual = _scrypt(password, salt, params.n, params.r, params.p, len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str, params: ScryptParams) -> bool:
    parsed = _parse(stored)
    return parsed is None or parsed[0] != params


class PasswordHasher:
    def __init__(
        self, params: ScryptParams, *, max_concurrent: int = 2, max_pending: int = 32
    ) -> None:
        self.params = params
        self._executor = ThreadPoolExecutor(max(1, max_concurrent), "password-hash")
        self._capacity = max(1, max_concurrent) + max(0, max_pending)
        self._in_use = 0
        self._burn_salt = os.urandom(16)

    @property
    def in_use(self) -> int:
        """Checks running or waiting for a thread."""
        return self._in_use

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password, self.params)

    async def verify(self, password: str, stored: str) -> tuple[bool, str | None]:
        """(matches, a new hash to store when `stored` used other parameters, else None)."""
        return await self._run(self._verify, password, stored)

    async def burn(self, password: str) -> None:
        """Spend what a check costs (unknown users answer no faster than wrong passwords)."""
        p = self.params
        await self._run(_scrypt, password, self._burn_salt, p.n, p.r, p.p)

    def _verify(self, password: str, stored: str) -> tuple[bool, str | None]:
        if not verify_password(password, stored):
            return False, None
        if needs_rehash(stored, self.params):
            return True, hash_password(password, self.params)
        return True, None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._in_use >= self._capacity:
            raise HasherBusy()
        self._in_use += 1
        try:
            # Shielded: a cancelled caller must not free its slot while its thread still runs.
            future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                await asyncio.wait([future])
                raise
        finally:
            self._in_use -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
