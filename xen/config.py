"""How to reach one pool: the `[[pools]]` entries of the server config and `server.add`."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(slots=True)
class PoolConfig:
    """One XAPI pool to stay connected to.

    `id` is xo-server's "server" id (a uuid we assign), not the pool's own uuid, which is only
    known once connected.
    """

    id: str
    url: str  # e.g. "https://127.0.1.1/" or "http://127.0.1.1:8443/"; the trailing "/" matters
    username: str
    password: str = ""
    password_env: str = ""  # name of an environment variable holding the password
    label: str = ""
    allow_unauthorized: bool = False  # accept self-signed certificates (XAPI's default)
    ca_file: str = ""  # pin a CA/certificate instead
    enabled: bool = True
    # Why the stored password cannot be used (it could not be decrypted): such a pool is
    # never connected, its status shows this error until a new password is given.
    credentials_error: str = ""

    def resolved_password(self) -> str:
        if self.password_env:
            return os.environ.get(self.password_env, "")
        return self.password

    def __repr__(self) -> str:  # never leak the password into logs
        return f"PoolConfig(id={self.id!r}, url={self.url!r}, username={self.username!r}, label={self.label!r}, enabled={self.enabled})"
