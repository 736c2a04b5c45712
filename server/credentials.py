"""Pool passwords at rest (`servers.password`): encrypted, never stored in clear.

Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography` package) with a key derived by
HKDF-SHA256 from the server secret `<data dir>/secret.key` (server/auth.py), so the token
secret and the encryption key are independent, and a copy of the database alone reveals no
password. Stored values are `fernet1:<token>`; an empty password stays empty (nothing to
hide, e.g. pools whose password comes from an environment variable). Values without the
prefix are clear passwords written by older versions: `Database` encrypts them on start.

When the secret changes or is lost, stored passwords cannot be decrypted: the pool is left
disconnected with `UNREADABLE` as its error until `server.set` gives a password again
(xo-server calls this "degraded mode: credential decryption failed").
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "fernet1:"
_HKDF_INFO = b"xo-migrate servers.password v1"

UNREADABLE = (
    "credential decryption failed: the stored password cannot be decrypted with this"
    " server's secret.key (lost or replaced); re-enter it with server.set"
)


class CredentialsUnreadable(Exception):
    """The stored value was encrypted with another key (or altered)."""


class CredentialCipher:
    def __init__(self, secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    @staticmethod
    def is_encrypted(stored: str) -> bool:
        return stored.startswith(PREFIX)

    def encrypt(self, password: str) -> str:
        if not password:
            return ""
        return PREFIX + self._fernet.encrypt(password.encode()).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The password; a clear (legacy) value is returned as is."""
        if not self.is_encrypted(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise CredentialsUnreadable(UNREADABLE) from None
