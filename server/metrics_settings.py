"""The `[metrics]` config section (see config.example.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.duration import parse_duration_ms


@dataclass(slots=True)
class MetricsSettings:
    enabled: bool = True  # GET /metrics on the API port, for an admin's token
    # A second listener serving only /metrics, without authentication: (host, port) or None.
    listen: tuple[str, int] | None = None
    lag_interval_s: float = 0.25  # event-loop lag sampling period


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9108`) -> (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen = {value!r}: expected host:port, e.g. 127.0.0.1:9108")
    return host, int(port)


def parse_metrics_settings(table: dict[str, Any]) -> MetricsSettings:
    settings = MetricsSettings(enabled=bool(table.get("enabled", True)))
    listen = table.get("listen", "")
    if not isinstance(listen, str):
        raise ValueError("listen must be a string, host:port")
    if listen:
        settings.listen = parse_listen(listen)
    settings.lag_interval_s = parse_duration_ms(table.get("lag_interval", "250 ms")) / 1000
    if not 0.01 <= settings.lag_interval_s <= 60:
        raise ValueError("lag_interval must be between 10 ms and 1 minute")
    return settings
