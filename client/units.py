"""Bytes, rates, durations and times as people read them."""

from __future__ import annotations

import time
from datetime import datetime

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: float | int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rate(bytes_per_s: float | int | None) -> str:
    return "-" if not bytes_per_s else f"{size(bytes_per_s)}/s"


def duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, round(float(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def timestamp(epoch: float | int | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")


def since(text: str, now: float | None = None) -> float:
    """`--since`: a duration back from now (`90s`, `30m`, `2h`, `7d`, `1w`) or a date
    (`2026-11-26`, `2026-11-26T10:00`); the epoch it means. ValueError otherwise."""
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip()
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 2h, 7d) or a date (2026-11-26)"
        ) from None
