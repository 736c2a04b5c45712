"""The stored registration, as xo-cli keeps its own: the server's URL and a token (never the
password) in `$XDG_CONFIG_HOME/xo-migrate/config.json` (`~/.config/...` by default), readable
by its owner only (0600, in a 0700 directory), written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from client.errors import CliError


@dataclass(slots=True)
class Registration:
    server: str  # http(s):// or ws(s):// URL of the xo-migrate server
    token: str
    allowUnauthorized: bool = False  # accept a self-signed TLS certificate
    # Kept across logins: the server gives this client the same token again (as xo-cli's).
    clientId: str = field(default_factory=lambda: str(uuid.uuid4()))


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "xo-migrate"


def config_path() -> Path:
    return config_dir() / "config.json"


def load() -> Registration | None:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}", hint="run xo-migrate login again") from None
    if not isinstance(data, dict) or not data.get("server") or not data.get("token"):
        raise CliError(f"{path} is incomplete", hint="run xo-migrate login again")
    known = Registration.__dataclass_fields__
    return Registration(**{k: v for k, v in data.items() if k in known})


def load_required() -> Registration:
    registration = load()
    if registration is None:
        raise CliError("not logged in", hint="run xo-migrate login URL first")
    return registration


def save(registration: Registration) -> Path:
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(registration), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path
