"""XML-RPC value rules of XAPI that the client must respect (xapi.md 1.2, 4.1, 8.2).

Pure functions, no I/O: argument preparation before a call, decoding of dates and task
results after it, and building a pool member's URL from the address XAPI hands out.
"""

from __future__ import annotations

import calendar
import datetime
import time
import xmlrpc.client
from typing import Any
from urllib.parse import urlsplit, urlunsplit

NULL_REF = "OpaqueRef:NULL"
REF_PREFIX = "OpaqueRef:"


def prepare_arg(value: Any) -> Any:
    """Make a call argument safe for XAPI's XML-RPC unmarshaller.

    Python ints beyond 32 bits raise OverflowError in xmlrpc.client, and XAPI accepts int64
    as decimal strings, so every int becomes a string (as XO does). `None` would be sent as
    `<nil/>`, which XAPI cannot unmarshal: refuse it here with a clear message instead.
    """
    if value is None:
        raise TypeError("XAPI has no null: pass '' or 'OpaqueRef:NULL' instead of None")
    if isinstance(value, bool | float | str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {str(k): prepare_arg(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [prepare_arg(v) for v in value]
    return value


def datetime_to_seconds(value: Any) -> int | None:
    """XAPI datetime (`YYYYMMDDTHH:MM:SSZ`, as xmlrpc DateTime or str) -> epoch seconds.

    The epoch itself means "not set" (a pending task's `finished`) and becomes None, as in
    xo-server's `parseDateTime`.
    """
    text = value.value if isinstance(value, xmlrpc.client.DateTime) else value
    if not isinstance(text, str) or not text:
        return None
    seconds = _compact_seconds(text)
    if seconds is not None:
        return seconds or None
    for fmt in ("%Y%m%dT%H:%M:%SZ", "%Y%m%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            seconds = calendar.timegm(time.strptime(text, fmt))
        except ValueError:
            continue
        return seconds or None
    return None


def _compact_seconds(text: str) -> int | None:
    """Fast path for XAPI's usual `YYYYMMDDTHH:MM:SS[Z]` (strptime costs ~10 us a call, and
    every task event carries two datetimes); None when `text` has any other shape."""
    if len(text) not in (17, 18) or text[8] != "T" or text[11] != ":" or text[14] != ":":
        return None
    if len(text) == 18 and text[17] != "Z":
        return None
    digits = text[0:8] + text[9:11] + text[12:14] + text[15:17]
    if not (digits.isascii() and digits.isdigit()):
        return None
    fields = (
        int(digits[0:4]),
        int(digits[4:6]),
        int(digits[6:8]),
        int(digits[8:10]),
        int(digits[10:12]),
        int(digits[12:14]),
    )
    try:
        datetime.datetime(*fields)  # range checks; a leap second (:60) takes the slow path
    except ValueError:
        return None
    return calendar.timegm((*fields, 0, 0, 0))


def decode_task_result(result: str) -> Any:
    """`task.result` is an XML-RPC `<value>` fragment; `""` and `<value></value>` are void."""
    if not result:
        return None
    params, _ = xmlrpc.client.loads(
        f"<methodResponse><params><param>{result}</param></params></methodResponse>"
    )
    value = params[0] if params else None
    return None if value == "" else value


def member_url(base_url: str, address: str) -> str:
    """URL of another pool member: the configured URL with its host part replaced.

    XAPI hands out bare addresses (IPv6 without brackets); the scheme, port and path of the
    configured URL are kept, since every member of a pool listens the same way.
    """
    parts = urlsplit(base_url)
    host = address.strip()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))


def url_host(url: str) -> str:
    """The bare host part of a URL (brackets of IPv6 removed)."""
    return urlsplit(url).hostname or ""
