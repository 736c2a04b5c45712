"""Users, passwords and authentication tokens (xo-server's authentication.mjs behaviour).

- Passwords: scrypt (hashlib), stored as `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`; hashing
  runs in a worker thread so a sign-in never blocks the event loop.
- Tokens: 43-character base64url strings; only their SHA-256 is stored. A token bound to a
  `client.id` (xo-cli keeps one per install) must be returned again on the next
  `token.create`, so it is derived, not random: HMAC-SHA256(server secret, user id, client id,
  per-token salt). The secret lives in `<data dir>/secret.key` (mode 0600), apart from the
  database, so a copy of the database alone reveals no usable token.
- Throttling: after a failed attempt for a given email, another attempt for that same email
  within `throttling_delay` fails at once ("too fast authentication tries"); other users are
  unaffected and no request ever sleeps.
"""

from __future__ import annotations

import asyncio
import base64
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
from server.db import Database, TokenRecord, User
from server.duration import parse_duration_ms
from server.matching import value_matches

log = logging.getLogger("xo_migrate.auth")

DEFAULT_ADMIN_EMAIL = "admin@admin.net"
DEFAULT_ADMIN_PASSWORD = "admin"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_MAX_LAST_USES = 10


class AuthError(Exception):
    """A plain (non-XO) error: admins see its message, others `unknown error from the peer`."""


def hash_password(
    password: str, *, n: int = _SCRYPT_N, r: int = _SCRYPT_R, p: int = _SCRYPT_P
) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class AuthSettings:
    default_token_validity_ms: float = 30 * 86400e3
    max_token_validity_ms: float = 0.5 * 365.25 * 86400e3
    throttling_delay_s: float = 2.0


class Authenticator:
    def __init__(self, db: Database, data_dir: Path, settings: AuthSettings) -> None:
        self._db = db
        self._settings = settings
        self._secret = load_secret(data_dir / "secret.key")
        self._failures: dict[str, float] = {}  # email -> monotonic time of the last failure
        # Verifying against this keeps unknown emails as slow as wrong passwords.
        self._dummy_hash = hash_password(secrets.token_hex(8))

    def ensure_default_admin(self) -> None:
        if self._db.count_users():
            return
        user = User(
            str(uuid.uuid4()), DEFAULT_ADMIN_EMAIL, hash_password(DEFAULT_ADMIN_PASSWORD), "admin"
        )
        self._db.add_user(user)
        log.warning("event=default_user_created email=%s", DEFAULT_ADMIN_EMAIL)

    def add_user(self, email: str, password: str, permission: str = "none") -> User:
        user = User(str(uuid.uuid4()), email, hash_password(password), permission)
        self._db.add_user(user)
        return user

    def user(self, user_id: str) -> User | None:
        return self._db.user_by_id(user_id)

    # -- sign-in -----------------------------------------------------------------------------

    async def sign_in(self, credentials: Any, remote: str) -> tuple[User, float | None]:
        """Check `{email|username, password}` or `{token}`: the user and, for a token, its
        expiration (seconds since the epoch)."""
        if not isinstance(credentials, dict):
            raise errors.invalid_credentials()
        token = credentials.get("token")
        if token is not None:
            return self.authenticate_token(token, remote)
        email = credentials.get("email", credentials.get("username"))
        password = credentials.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise errors.invalid_credentials()
        if password == "":
            raise AuthError("empty password")
        now = time.monotonic()
        last_failure = self._failures.get(email)
        if last_failure is not None and now - last_failure < self._settings.throttling_delay_s:
            log.info("event=sign_in_throttled email=%s remote=%s", email, remote)
            raise AuthError("too fast authentication tries")
        user = self._db.user_by_email(email)
        ok = await asyncio.to_thread(
            verify_password, password, user.pw_hash if user else self._dummy_hash
        )
        if user is None or not ok:
            self._record_failure(email, time.monotonic())
            log.info("event=sign_in_failed email=%s remote=%s", email, remote)
            raise errors.invalid_credentials()
        self._failures.pop(email, None)
        log.info("event=sign_in user=%s method=password remote=%s", user.email, remote)
        return user, None

    def authenticate_token(self, token: Any, remote: str) -> tuple[User, float]:
        if not isinstance(token, str):
            raise errors.invalid_credentials()
        rec = self._db.token(token_hash(token))
        now = time.time()
        if rec is None or rec.expired(now):
            log.info("event=sign_in_failed method=token remote=%s", remote)
            raise errors.invalid_credentials()
        user = self._db.user_by_id(rec.user_id)
        if user is None:
            raise errors.invalid_credentials()
        uses = dict(rec.last_uses)
        uses.pop(remote, None)
        uses[remote] = {"timestamp": int(now * 1000)}
        while len(uses) > _MAX_LAST_USES:
            uses.pop(next(iter(uses)))
        self._db.touch_token(rec.hash, uses)
        log.info("event=sign_in user=%s method=token remote=%s", user.email, remote)
        return user, rec.expiration

    def _record_failure(self, email: str, now: float) -> None:
        if len(self._failures) > 10_000:  # forget stale entries; bounded memory under attack
            horizon = now - self._settings.throttling_delay_s
            self._failures = {k: t for k, t in self._failures.items() if t > horizon}
        self._failures[email] = now

    # -- tokens ------------------------------------------------------------------------------

    def create_token(
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
            rec = self._db.client_token(user.id, client_id)
            if rec is not None and not rec.expired(now) and rec.client_salt:
                self._db.refresh_token(rec.hash, expiration, description)
                return self._client_token(user.id, client_id, rec.client_salt)
        salt = secrets.token_hex(16) if client_id is not None else None
        token = (
            self._client_token(user.id, client_id, salt)
            if client_id is not None and salt is not None
            else secrets.token_urlsafe(32)
        )
        self._db.add_token(
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
        try:
            ms = parse_duration_ms(expires_in)
        except ValueError:
            raise AuthError(f"invalid expiresIn duration: {shown}") from None
        if ms < 60e3:
            raise AuthError(f"invalid expiresIn duration: {shown}")
        if ms > self._settings.max_token_validity_ms:
            raise AuthError(f"too high expiresIn duration: {shown}")
        return ms

    def _client_token(self, user_id: str, client_id: str, salt: str) -> str:
        msg = f"{user_id}\0{client_id}\0{salt}".encode()
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token_of(self, user_id: str, token_id: str) -> TokenRecord:
        """One of `user_id`'s live tokens, by token or public id; `no such
        authenticationToken <id>` (code 1) when it has none such."""
        identity = {"id": token_id}
        for rec in self._db.tokens_of(user_id):
            if not rec.expired() and value_matches(identity, {"id": _TokenIdentity(rec)}):
                return rec
        raise errors.no_such_object(token_id, "authenticationToken")

    def set_token_description(self, rec: TokenRecord, description: str | None) -> None:
        self._db.refresh_token(rec.hash, rec.expiration, description)

    def delete_tokens(
        self,
        *,
        tokens: list[str] | None,
        pattern: dict[str, Any] | None,
        user_id: str | None = None,
    ) -> int:
        """Delete the listed tokens, or those whose record matches `pattern` (all if neither);
        restricted to one user's tokens when `user_id` is given."""
        return len(self.revoke_tokens(tokens=tokens, pattern=pattern, user_id=user_id))

    def revoke_tokens(
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
            for r in self._db.tokens_of(user_id)
            if value_matches(pattern or {}, {**r.public(), "id": _TokenIdentity(r)})
        ]
        count = self._db.delete_tokens(doomed)
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
    passwords is derived from it (server/credentials.py)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def _js_string(value: float | int | str) -> str:
    """`String(value)` in JavaScript: JSON numbers have no int/float split, so 1000.0 is "1000"."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)
