"""Users, passwords and authentication tokens (xo-server's authentication.mjs behaviour).

- Passwords: scrypt (server/passwords.py), checked in the hasher's own bounded pool of
  threads, never on the event loop; a hash made with weaker parameters is upgraded at the
  next successful sign-in.
- Tokens: 43-character base64url strings; only their SHA-256 is stored. A token bound to a
  `client.id` (xo-cli keeps one per install) must be returned again on the next
  `token.create`, so it is derived, not random: HMAC-SHA256(server secret, user id, client id,
  per-token salt). The secret lives in `<data dir>/secret.key` (mode 0600), apart from the
  database, so a copy of the database alone reveals no usable token. A user holds at most
  `max_tokens_per_user` live tokens.
- Throttling (server/throttle.py): keyed by (email, client address) and by client address,
  counting attempts in flight; a refused attempt fails at once ("too fast authentication
  tries") and no request ever sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server import errors
from server.duration import parse_duration_ms
from server.matching import value_matches
from server.passwords import (
    DEFAULT_SCRYPT_N,
    HasherBusy,
    PasswordHasher,
    ScryptParams,
    hash_password,
)
from server.storage import Storage, StorageUnavailable
from server.storage.records import TokenRecord, User
from server.throttle import SignInThrottle, Throttled, ThrottleSettings

log = logging.getLogger("xo_migrate.auth")

DEFAULT_ADMIN_EMAIL = "admin@admin.net"
DEFAULT_ADMIN_PASSWORD = "admin"
_MAX_LAST_USES = 10
# Shorter secrets make the token HMACs and the pool password key guessable.
MIN_SECRET_BYTES = 32


class AuthError(Exception):
    """A plain (non-XO) error: admins see its message, others `unknown error from the peer`."""


class SecretError(Exception):
    """secret.key is unusable (too short, unreadable): the server must not start."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class AuthSettings:
    default_token_validity_ms: float = 30 * 86400e3
    max_token_validity_ms: float = 0.5 * 365.25 * 86400e3
    throttling_delay_s: float = 2.0
    scrypt_n: int = DEFAULT_SCRYPT_N  # scrypt cost (r=8, p=1); OWASP's minimum by default
    max_concurrent_checks: int = 2  # password hashes computed at once (threads)
    max_pending_checks: int = 32  # more waiting for a thread; past that, refused at once
    checks_per_address: int = 1  # password checks in flight per client address
    failures_per_address: int = 10  # failure budget per address, refilled 1 per delay
    waiting_per_address: int = 64  # sign-ins of one address waiting their turn
    max_credential_length: int = 4096  # characters of an email or password
    max_tokens_per_user: int = 1000  # live authentication tokens per user

    def throttle(self) -> ThrottleSettings:
        return ThrottleSettings(
            delay_s=self.throttling_delay_s,
            checks_per_address=self.checks_per_address,
            failures_per_address=self.failures_per_address,
            waiting_per_address=self.waiting_per_address,
        )


class Authenticator:
    def __init__(self, storage: Storage, secret: bytes, settings: AuthSettings) -> None:
        self._db = storage
        self._settings = settings
        self._secret = secret
        self._params = ScryptParams(n=settings.scrypt_n)
        self.hasher = PasswordHasher(
            self._params,
            max_concurrent=settings.max_concurrent_checks,
            max_pending=settings.max_pending_checks,
        )
        self.throttle = SignInThrottle(settings.throttle())

    def close(self) -> None:
        self.hasher.close()

    async def ensure_default_admin(self) -> None:
        if await self._db.count_users():
            return
        await self.add_user(DEFAULT_ADMIN_EMAIL, DEFAULT_ADMIN_PASSWORD, "admin")
        log.warning("event=default_user_created email=%s", DEFAULT_ADMIN_EMAIL)

    async def add_user(self, email: str, password: str, permission: str = "none") -> User:
        """Start-up and tests: hashes on the event loop's thread."""
        user = User(str(uuid.uuid4()), email, hash_password(password, self._params), permission)
        await self._db.add_user(user)
        return user

    async def user(self, user_id: str) -> User | None:
        return await self._db.user_by_id(user_id)

    async def hash_password(self, password: str) -> str:
        """A new password's hash, computed in the hasher's threads."""
        try:
            return await self.hasher.hash(password)
        except HasherBusy:
            raise AuthError("too many password operations in progress, try again later") from None

    # -- sign-in -----------------------------------------------------------------------------

    async def sign_in(self, credentials: Any, remote: str) -> tuple[User, float | None]:
        """Check `{email|username, password}` or `{token}`: the user and, for a token, its
        expiration (seconds since the epoch)."""
        if not isinstance(credentials, dict):
            raise errors.invalid_credentials()
        token = credentials.get("token")
        if token is not None:
            return await self.authenticate_token(token, remote)
        email = credentials.get("email", credentials.get("username"))
        password = credentials.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise errors.invalid_credentials()
        if password == "":
            raise AuthError("empty password")
        user = await self.check_password(email, password, remote)
        log.info("event=sign_in user=%s method=password remote=%s", user.email, remote)
        return user, None

    async def check_password(self, email: str, password: str, remote: str) -> User:
        """The user whose email and password these are, through the throttle; raises
        `invalid credentials`, or AuthError when refused without a check."""
        limit = self._settings.max_credential_length
        if len(email) > limit or len(password) > limit:
            raise errors.invalid_credentials()
        user = await self._db.user_by_email(email)
        stored = user.pw_hash if user is not None else None
        try:
            async with self.throttle.attempt(email, remote, password, stored) as attempt:
                new_hash = None
                if attempt.verified:
                    ok = True
                elif user is None or stored is None:
                    await self.hasher.burn(password)  # unknown emails cost the same time
                    ok = False
                else:
                    ok, new_hash = await self.hasher.verify(password, stored)
                # Re-read after the wait: the user may have been changed or deleted meanwhile.
                current = await self._db.user_by_email(email) if ok else None
                if current is None or current.pw_hash != stored:
                    attempt.failed()
                    log.info("event=sign_in_failed email=%s remote=%s", email, remote)
                    raise errors.invalid_credentials()
                if new_hash is not None:
                    current.pw_hash = new_hash
                    await self._db.update_user(current)
                    log.info("event=password_rehashed user=%s n=%d", current.id, self._params.n)
                attempt.succeeded(current.pw_hash)
                return current
        except Throttled as exc:
            log.info("event=sign_in_throttled email=%s remote=%s by=%s", email, remote, exc)
            raise AuthError("too fast authentication tries") from None
        except HasherBusy:
            log.warning("event=sign_in_busy email=%s remote=%s", email, remote)
            raise AuthError("too many authentication tries in progress, try again later") from None

    async def authenticate_token(self, token: Any, remote: str) -> tuple[User, float]:
        if not isinstance(token, str):
            raise errors.invalid_credentials()
        rec = await self._db.token(token_hash(token))
        now = time.time()
        if rec is None or rec.expired(now):
            log.info("event=sign_in_failed method=token remote=%s", remote)
            raise errors.invalid_credentials()
        user = await self._db.user_by_id(rec.user_id)
        if user is None:
            raise errors.invalid_credentials()
        uses = dict(rec.last_uses)
        uses.pop(remote, None)
        uses[remote] = {"timestamp": int(now * 1000)}
        while len(uses) > _MAX_LAST_USES:
            uses.pop(next(iter(uses)))
        with contextlib.suppress(StorageUnavailable):  # a sign-in is a read: it goes on
            await self._db.touch_token(rec.hash, uses)
        log.info("event=sign_in user=%s method=token remote=%s", user.email, remote)
        return user, rec.expiration

    # -- tokens ------------------------------------------------------------------------------

    async def create_token(
        self,
        user: User,
        *,
        description: str | None = None,
        client_id: str | None = None,
        expires_in: float | int | str | None = None,
    ) -> str:
        validity_ms = self._validity_ms(expires_in)
        now = time.time()
        expiration = now + validity_ms / 1000.0
        if client_id is not None:
            rec = await self._db.client_token(user.id, client_id)
            if rec is not None and not rec.expired(now) and rec.client_salt:
                await self._db.refresh_token(rec.hash, expiration, description)
                return self._client_token(user.id, client_id, rec.client_salt)
        quota = self._settings.max_tokens_per_user
        if await self._db.count_live_tokens(user.id, now) >= quota:
            raise errors.forbidden_operation(
                "token.create",
                f"this user already has {quota} authentication tokens, the most allowed:"
                " delete some (token.deleteOwn) first",
            )
        salt = secrets.token_hex(16) if client_id is not None else None
        token = (
            self._client_token(user.id, client_id, salt)
            if client_id is not None and salt is not None
            else secrets.token_urlsafe(32)
        )
        await self._db.add_token(
            TokenRecord(
                token_hash(token), user.id, now, expiration, description, client_id, salt, {}
            )
        )
        log.info("event=token_created user=%s client=%s", user.email, client_id or "-")
        return token

    def _validity_ms(self, expires_in: float | int | str | None) -> float:
        if expires_in is None:
            return self._settings.default_token_validity_ms
        shown = _js_string(expires_in)  # the messages quote the value as JavaScript prints it
        if len(shown) > 100:  # the value is quoted back: never a long one
            shown = shown[:100] + "..."
        try:
            ms = parse_duration_ms(expires_in)
        except ValueError:
            raise _plain_error(f"invalid expiresIn duration: {shown}") from None
        if ms < 60e3:
            raise _plain_error(f"invalid expiresIn duration: {shown}")
        if ms > self._settings.max_token_validity_ms:
            raise _plain_error(f"too high expiresIn duration: {shown}")
        return ms

    def _client_token(self, user_id: str, client_id: str, salt: str) -> str:
        msg = f"{user_id}\0{client_id}\0{salt}".encode()
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    async def token_of(self, user_id: str, token_id: str) -> TokenRecord:
        """One of `user_id`'s live tokens, by token or public id; `no such
        authenticationToken <id>` (code 1) when it has none such."""
        identity = {"id": token_id}
        for rec in await self._db.tokens_of(user_id):
            if not rec.expired() and value_matches(identity, {"id": _TokenIdentity(rec)}):
                return rec
        raise errors.no_such_object(token_id, "authenticationToken")

    async def set_token_description(self, rec: TokenRecord, description: str | None) -> None:
        await self._db.refresh_token(rec.hash, rec.expiration, description)

    async def delete_tokens(
        self,
        *,
        tokens: list[str] | None,
        pattern: dict[str, Any] | None,
        user_id: str | None = None,
    ) -> int:
        """Delete the listed tokens, or those whose record matches `pattern` (all if neither);
        restricted to one user's tokens when `user_id` is given."""
        return len(await self.revoke_tokens(tokens=tokens, pattern=pattern, user_id=user_id))

    async def revoke_tokens(
        self,
        *,
        tokens: list[str] | None,
        pattern: dict[str, Any] | None,
        user_id: str | None = None,
    ) -> set[str]:
        """`delete_tokens`, returning the hashes deleted (to close the connections using them).
        As in xo-server, `tokens` is the pattern `{"id": {"__or": tokens}}`; a record's id
        matches its token and its public id (what user.getAuthenticationTokens shows)."""
        if tokens is not None:
            pattern = {"id": {"__or": list(tokens)}}
        doomed = [
            r.hash
            for r in await self._db.tokens_of(user_id)
            if value_matches(pattern or {}, {**r.public(), "id": _TokenIdentity(r)})
        ]
        count = await self._db.delete_tokens(doomed)
        log.info("event=tokens_deleted count=%d", count)
        return set(doomed)


class _TokenIdentity:
    """A token record's `id` in a pattern: equal to its token or to its public id."""

    __slots__ = ("_rec",)

    def __init__(self, rec: TokenRecord) -> None:
        self._rec = rec

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return False
        return other == self._rec.public_id or token_hash(other) == self._rec.hash

    __hash__ = None  # type: ignore[assignment]


def load_secret(path: Path) -> bytes:
    """The server secret (created on first use): token HMACs, and the key of stored pool
    passwords is derived from it (server/credentials.py). A short one is refused."""
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        if len(secret) < MIN_SECRET_BYTES:
            raise SecretError(
                f"{path} holds {len(secret)} bytes, at least {MIN_SECRET_BYTES} are needed:"
                " restore it from a backup (with the database), or move both away to start"
                " afresh"
            )
        return secret
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def _plain_error(message: str) -> errors.RpcError:
    """A plain error, as xo-server throws, but readable by every user (not only admins): it
    only quotes back the caller's own value."""
    return errors.server_error(message, {"message": message, "name": "Error"})


def _js_string(value: float | int | str) -> str:
    """`String(value)` in JavaScript: JSON numbers have no int/float split, so 1000.0 is "1000"."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)
