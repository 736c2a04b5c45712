"""Server configuration: a TOML file (see config.example.toml, which documents every key)."""

from __future__ import annotations

import ipaddress
import tomllib
import uuid
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from server.auth import AuthSettings
from server.duration import parse_duration_ms
from server.guard import ConnectionLimits
from server.limits import InputLimits
from server.metrics_settings import MetricsSettings, parse_metrics_settings
from server.migrations.service import MigrationSettings
from server.signin import SignInSettings
from server.storage import DatabaseSettings, parse_database_url
from xen.config import PoolConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class ConfigError(ValueError):
    pass


@dataclass(slots=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    cert_file: str = ""  # PEM certificate (chain): serve https:// and wss://
    key_file: str = ""
    data_dir: Path = Path("data")
    auth: AuthSettings = field(default_factory=AuthSettings)
    max_message_size: int = 16 * 1024 * 1024  # bytes, per WebSocket message / HTTP body
    push_max_frames: int = 256  # shared frames queued per connection before coalescing
    push_max_objects: int = 100_000  # coalesced objects per connection before disconnecting
    push_min_interval_s: float = 0.02  # changes are batched into at most one push per interval
    pools: list[PoolConfig] = field(default_factory=list)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    # URL prefix -> directory served there (`[http.mounts]`, `serve --mount`): the web UI.
    mounts: dict[str, Path] = field(default_factory=dict)
    signin: SignInSettings = field(default_factory=SignInSettings)
    limits: InputLimits = field(default_factory=InputLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    # Origins (scheme://host[:port]) besides the server's own allowed to send cookie-
    # authenticated requests (server/crosssite.py); e.g. a UI served from another host.
    allowed_origins: list[str] = field(default_factory=list)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client
    # (server/netaddr.py TrustedProxies); empty: the header is ignored.
    trusted_proxies: list[str] = field(default_factory=list)
    log_burst: int = 10  # lines of one repeated message let through per window
    log_window_s: float = 10.0
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)


# Integer keys of [authentication]: password checks and the sign-in throttle
# (server/passwords.py, server/throttle.py).
_AUTH_INTS = (
    "scrypt_n",
    "max_concurrent_checks",
    "max_pending_checks",
    "checks_per_address",
    "failures_per_address",
    "waiting_per_address",
    "max_credential_length",
    "max_tokens_per_user",
)
# Connection limits (server/guard.py) in [http] and [api].
_CONNECTION_INTS = ("max_connections", "max_connections_per_address", "backlog")
# key -> ConnectionLimits field (seconds), per section; 0 turns the last two off.
_CONNECTION_DURATIONS = {
    "http": {
        "header_timeout": "header_timeout_s",
        "keepalive_timeout": "keepalive_timeout_s",
        "body_timeout": "body_timeout_s",
    },
    "api": {
        "websocket_heartbeat": "websocket_heartbeat_s",
        "unauthenticated_timeout": "unauthenticated_timeout_s",
    },
}

_SECTIONS: dict[str, set[str]] = {
    "": {
        "data_dir",
        "http",
        "authentication",
        "api",
        "pools",
        "migration",
        "limits",
        "log",
        "metrics",
        "database",
    },
    "database": {"url", "lease_ttl"},
    "metrics": {"enabled", "listen", "lag_interval"},
    "migration": {
        "per_pool_limit",
        "per_host_limit",
        "retry_delay",
        "history_keep",
        "plan_checks",
    },
    "http": {
        "host",
        "port",
        "cert",
        "key",
        "mounts",
        "allowed_origins",
        "trusted_proxies",
        *_CONNECTION_INTS,
        *_CONNECTION_DURATIONS["http"],
    },
    "authentication": {
        "default_token_validity",
        "max_token_validity",
        "throttling_delay",
        "session_cookie_validity",
        "permanent_cookie_validity",
        *_AUTH_INTS,
    },
    "api": {
        "max_message_size",
        "push_queue_frames",
        "push_max_pending_objects",
        "push_min_interval",
        *_CONNECTION_DURATIONS["api"],
    },
    "limits": {f.name for f in fields(InputLimits)},
    "log": {"repeat_burst", "repeat_window"},
    "pools": {
        "id",
        "label",
        "url",
        "username",
        "password",
        "password_env",
        "allow_unauthorized",
        "ca_file",
        "enabled",
    },
}


def _check_keys(section: str, table: dict[str, Any]) -> None:
    unknown = set(table) - _SECTIONS[section]
    if unknown:
        where = f"[{section}]" if section else "top level"
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where}")


def pool_id_for(url: str) -> str:
    """Config pools get a stable server id derived from their URL."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, url))


def manifest_pool_config(
    pool: dict[str, Any], pool_id: str | None = None, allow_unauthorized: bool = False
) -> PoolConfig:
    """One pool of a simulator manifest (`xo-migrate sim --manifest`) as a pool to connect
    to; its id is derived from the master URL unless given."""
    return PoolConfig(
        id=pool_id or pool_id_for(pool["master"]),
        url=pool["master"],
        username=pool["username"],
        password=pool["password"],
        label=pool["name"],
        allow_unauthorized=allow_unauthorized,
        ca_file=pool.get("ca_file", ""),  # an HTTPS lab gives each pool a bundle to pin
    )


def normalize_pool_url(host: str) -> str:
    """xo-server's `host` may be `1.2.3.4`, `host:port` or a URL; we keep a URL ending in /."""
    url = host if "://" in host else f"https://{host}"
    return url if url.endswith("/") else url + "/"


def parse_mount(prefix: str, directory: str | Path, base_dir: Path) -> tuple[str, Path]:
    """One `[http.mounts]` entry (or `serve --mount PREFIX=DIR`): a URL prefix and the
    existing directory served under it; a relative directory is relative to `base_dir`."""
    if not isinstance(prefix, str) or not prefix.startswith("/") or "//" in prefix:
        raise ConfigError(f"[http.mounts] {prefix!r}: a URL prefix must start with a single /")
    if any(part in (".", "..") for part in prefix.split("/")) or "\\" in prefix:
        raise ConfigError(f"[http.mounts] {prefix!r}: no . or .. segment in a URL prefix")
    if not isinstance(directory, str | Path) or str(directory) == "":
        raise ConfigError(f"[http.mounts] {prefix!r}: the directory must be a path")
    path = Path(directory).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_dir():
        raise ConfigError(f"[http.mounts] {prefix!r}: {path} is not a directory")
    normalized = prefix.rstrip("/") or "/"
    return normalized, path.resolve()


def _parse_signin(auth: dict[str, Any], max_token_validity_ms: float) -> SignInSettings:
    """The web sign-in's token validities: a token outside token.create's bounds (1 minute to
    `max_token_validity`) could never be created, so such a config is refused at start."""
    settings = SignInSettings(
        session_cookie_validity_ms=parse_duration_ms(
            auth.get("session_cookie_validity", "10 hours")
        ),
        permanent_cookie_validity_ms=parse_duration_ms(
            auth.get("permanent_cookie_validity", "30 days")
        ),
    )
    for name in ("session_cookie_validity", "permanent_cookie_validity"):
        ms = getattr(settings, f"{name}_ms")
        if not 60e3 <= ms <= max_token_validity_ms:
            raise ValueError(f"{name} must be between 1 minute and max_token_validity")
    return settings


def parse_config(data: dict[str, Any], base_dir: Path) -> ServerConfig:
    _check_keys("", data)
    cfg = ServerConfig()
    http = data.get("http", {})
    _check_keys("http", http)
    cfg.host = str(http.get("host", cfg.host))
    cfg.port = int(http.get("port", cfg.port))
    cfg.cert_file = str(http.get("cert", ""))
    cfg.key_file = str(http.get("key", ""))
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise ConfigError("[http] cert and key must be given together")
    mounts = http.get("mounts", {})
    if not isinstance(mounts, dict):
        raise ConfigError("[http.mounts] must be a table of URL prefix = directory")
    cfg.mounts = dict(
        parse_mount(prefix, directory, base_dir) for prefix, directory in mounts.items()
    )
    data_dir = Path(data.get("data_dir", "data")).expanduser()
    cfg.data_dir = data_dir if data_dir.is_absolute() else base_dir / data_dir
    auth = data.get("authentication", {})
    _check_keys("authentication", auth)
    try:
        cfg.auth = AuthSettings(
            default_token_validity_ms=parse_duration_ms(
                auth.get("default_token_validity", "30 days")
            ),
            max_token_validity_ms=parse_duration_ms(auth.get("max_token_validity", "0.5 year")),
            throttling_delay_s=parse_duration_ms(auth.get("throttling_delay", "2 seconds")) / 1000,
            **_ints(auth, AuthSettings(), _AUTH_INTS),
        )
        cfg.signin = _parse_signin(auth, cfg.auth.max_token_validity_ms)
    except ValueError as exc:
        raise ConfigError(f"[authentication] {exc}") from None
    n = cfg.auth.scrypt_n
    if n < 2**10 or n & (n - 1):
        raise ConfigError("[authentication] scrypt_n must be a power of 2, at least 1024")
    api = data.get("api", {})
    _check_keys("api", api)
    cfg.max_message_size = int(api.get("max_message_size", cfg.max_message_size))
    cfg.push_max_frames = int(api.get("push_queue_frames", cfg.push_max_frames))
    cfg.push_max_objects = int(api.get("push_max_pending_objects", cfg.push_max_objects))
    try:
        cfg.push_min_interval_s = parse_duration_ms(api.get("push_min_interval", "20 ms")) / 1000
        connection_settings: dict[str, Any] = {
            **_ints(http, cfg.connections, _CONNECTION_INTS),
            **_durations(http, _CONNECTION_DURATIONS["http"]),
            **_durations(api, _CONNECTION_DURATIONS["api"]),
        }
        cfg.connections = replace(cfg.connections, **connection_settings)
    except ValueError as exc:
        raise ConfigError(f"[http]/[api] {exc}") from None
    limits = data.get("limits", {})
    _check_keys("limits", limits)
    try:
        cfg.limits = replace(cfg.limits, **_ints(limits, cfg.limits))
    except ValueError as exc:
        raise ConfigError(f"[limits] {exc}") from None
    origins = http.get("allowed_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError("[http] allowed_origins must be a list of strings")
    cfg.allowed_origins = list(origins)
    cfg.trusted_proxies = _trusted_proxies(http.get("trusted_proxies", []))
    log_table = data.get("log", {})
    _check_keys("log", log_table)
    try:
        cfg.log_burst = _positive("repeat_burst", log_table.get("repeat_burst", cfg.log_burst))
        cfg.log_window_s = parse_duration_ms(log_table.get("repeat_window", "10 seconds")) / 1000
    except ValueError as exc:
        raise ConfigError(f"[log] {exc}") from None
    migration = data.get("migration", {})
    _check_keys("migration", migration)
    try:
        cfg.migration = MigrationSettings(
            per_pool_limit=int(migration.get("per_pool_limit", 3)),
            per_host_limit=int(migration.get("per_host_limit", 3)),
            retry_delay_s=parse_duration_ms(migration.get("retry_delay", "10 seconds")) / 1000,
            history_keep=int(migration.get("history_keep", 1000)),
            plan_checks=int(migration.get("plan_checks", 8)),
        )
    except ValueError as exc:
        raise ConfigError(f"[migration] {exc}") from None
    if min(cfg.migration.per_pool_limit, cfg.migration.per_host_limit) < 1:
        raise ConfigError("[migration] limits must be at least 1")
    if cfg.migration.plan_checks < 1:
        raise ConfigError("[migration] plan_checks must be at least 1")
    metrics = data.get("metrics", {})
    _check_keys("metrics", metrics)
    try:
        cfg.metrics = parse_metrics_settings(metrics)
    except ValueError as exc:
        raise ConfigError(f"[metrics] {exc}") from None
    cfg.database = _parse_database(data.get("database", {}))
    for entry in data.get("pools", []):
        _check_keys("pools", entry)
        if "url" not in entry or "username" not in entry:
            raise ConfigError("each [[pools]] entry needs url and username")
        url = normalize_pool_url(str(entry["url"]))
        cfg.pools.append(
            PoolConfig(
                id=str(entry.get("id") or pool_id_for(url)),
                url=url,
                username=str(entry["username"]),
                password=str(entry.get("password", "")),
                password_env=str(entry.get("password_env", "")),
                label=str(entry.get("label", "")),
                allow_unauthorized=bool(entry.get("allow_unauthorized", False)),
                ca_file=str(entry.get("ca_file", "")),
                enabled=bool(entry.get("enabled", True)),
            )
        )
    return cfg


def _parse_database(table: dict[str, Any]) -> DatabaseSettings:
    _check_keys("database", table)
    url = table.get("url", "")
    if not isinstance(url, str):
        raise ConfigError("[database] url must be a string")
    try:
        parse_database_url(url)
        ttl = parse_duration_ms(table.get("lease_ttl", "5 seconds")) / 1000
    except ValueError as exc:
        raise ConfigError(f"[database] {exc}") from None
    if not 1 <= ttl <= 300:
        raise ConfigError("[database] lease_ttl must be between 1 second and 5 minutes")
    return DatabaseSettings(url=url, lease_ttl_s=ttl)


_REQUIRED_TIMEOUTS = ("header_timeout_s", "keepalive_timeout_s", "body_timeout_s")


def _positive(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number of at least 1, not {value!r}")
    return value


def _ints(table: dict[str, Any], defaults: Any, keys: tuple[str, ...] = ()) -> dict[str, int]:
    """The integer settings of `table` among `keys` (default: every field of `defaults`)."""
    names = keys or tuple(f.name for f in fields(defaults))
    return {k: _positive(k, table[k]) for k in names if k in table}


def _durations(table: dict[str, Any], keys: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, name in keys.items():
        if key in table:
            seconds = parse_duration_ms(table[key]) / 1000
            if seconds < 0 or (seconds == 0 and name in _REQUIRED_TIMEOUTS):
                raise ValueError(f"{key} must be positive")
            out[name] = seconds
    return out


def load_config(path: str | Path) -> ServerConfig:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    return parse_config(data, path.resolve().parent)


def _trusted_proxies(value: Any) -> list[str]:
    """`[http] trusted_proxies`: addresses or networks, checked here (a typo must not silently
    trust nobody, or everybody)."""
    if value is True:
        raise ConfigError(
            '[http] trusted_proxies must list the proxies\' addresses (e.g. ["127.0.0.1"]):'
            " trusting every peer would let any client choose its address"
        )
    if value is False:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("[http] trusted_proxies must be a list of addresses or networks")
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"[http] trusted_proxies: {entry[:100]!r} is not an address or a network"
            ) from None
    return list(value)
