"""Durations as xo-server accepts them (@vates/parse-duration, i.e. the `ms` package syntax).

A number is milliseconds; a string is `<number> [unit]` such as `30 days`, `1h`, `0.5 year`,
`2 seconds` or a bare number of milliseconds.
"""

from __future__ import annotations

import re

_MS = {
    "ms": 1.0,
    "msec": 1.0,
    "msecs": 1.0,
    "millisecond": 1.0,
    "milliseconds": 1.0,
    "s": 1e3,
    "sec": 1e3,
    "secs": 1e3,
    "second": 1e3,
    "seconds": 1e3,
    "m": 60e3,
    "min": 60e3,
    "mins": 60e3,
    "minute": 60e3,
    "minutes": 60e3,
    "h": 3600e3,
    "hr": 3600e3,
    "hrs": 3600e3,
    "hour": 3600e3,
    "hours": 3600e3,
    "d": 86400e3,
    "day": 86400e3,
    "days": 86400e3,
    "w": 7 * 86400e3,
    "week": 7 * 86400e3,
    "weeks": 7 * 86400e3,
    "y": 365.25 * 86400e3,
    "yr": 365.25 * 86400e3,
    "yrs": 365.25 * 86400e3,
    "year": 365.25 * 86400e3,
    "years": 365.25 * 86400e3,
}
_PATTERN = re.compile(r"^\s*(-?(?:\d+)?\.?\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_duration_ms(value: float | int | str) -> float:
    """Milliseconds; raises ValueError for anything unparsable."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _PATTERN.match(value)
    if match is None:
        raise ValueError(f"invalid duration: {value!r}")
    number, unit = match.groups()
    factor = _MS.get(unit.lower() or "ms")
    if factor is None:
        raise ValueError(f"invalid duration: {value!r}")
    return float(number) * factor
