"""Durations as xo-server accepts them (@vates/parse-duration, i.e. the `ms` package syntax).

A number is milliseconds; a string is `<number> [unit]` such as `30 days`, `1h`, `0.5 year`,
`2 seconds` or a bare number of milliseconds. Strings longer than 100 characters are refused
unread, as the `ms` package does, and the pattern never backtracks more than linearly.
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
MAX_LENGTH = 100
# `-?(?:\d*\.)?\d+`: the same numbers as `ms`'s `-?(?:\d+)?\.?\d+`, whose two adjacent digit
# runs backtrack quadratically on a long string of digits followed by garbage.
# Surrounding blanks are stripped first: two `\s*` around an empty unit would backtrack too.
_PATTERN = re.compile(r"(-?(?:\d*\.)?\d+)\s*([a-z]*)", re.IGNORECASE)


def parse_duration_ms(value: float | int | str) -> float:
    """Milliseconds; raises ValueError for anything unparsable."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if len(value) > MAX_LENGTH:
        raise ValueError(f"invalid duration: longer than {MAX_LENGTH} characters")
    match = _PATTERN.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"invalid duration: {value!r}")
    number, unit = match.groups()
    factor = _MS.get(unit.lower() or "ms")
    if factor is None:
        raise ValueError(f"invalid duration: {value!r}")
    return float(number) * factor
