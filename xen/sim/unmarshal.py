"""Typed unmarshalling of call arguments per the datamodel's parameter types (xapi.md 1.2).

What XAPI accepts: ints as `<int>`/`<i4>`/`<i8>` or decimal strings; floats as doubles, ints
or numeric strings; bools only as `<boolean>`; strings/refs/enums as strings. Anything else
is a typed XAPI error, never an exception escaping to the HTTP layer.
"""

from __future__ import annotations

import xmlrpc.client
from datetime import UTC, datetime
from typing import Any

from xen.sim.codec import DATE_FORMAT
from xen.sim.db import Schema, XapiFailure, type_kind


class ArgTypeError(Exception):
    def __init__(self, expected: str, received: Any) -> None:
        self.expected = expected
        self.received = received
        super().__init__(expected)


def split_map_type(t: str) -> tuple[str, str]:
    """'(string -> (string -> string) map) map' -> ('string', '(string -> string) map')."""
    inner = t[1 : -len(") map")]
    depth = 0
    for i in range(len(inner) - 3):
        c = inner[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and inner.startswith(" -> ", i):
            return inner[:i], inner[i + 4 :]
    raise ValueError(t)


def convert(schema: Schema, t: str, value: Any) -> Any:
    """`value` as a native value of datamodel type `t`; raises ArgTypeError."""
    kind = type_kind(t)
    if kind in ("string", "ref"):
        if isinstance(value, str):
            return value
        raise ArgTypeError(t, value)
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ArgTypeError(t, value)
    if kind == "float":
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ArgTypeError(t, value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ArgTypeError(t, value)
    if kind == "datetime":
        raw = value.value if isinstance(value, xmlrpc.client.DateTime) else value
        if isinstance(raw, str):
            for fmt in (DATE_FORMAT, "%Y%m%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"):
                try:
                    return datetime.strptime(raw, fmt).replace(tzinfo=UTC)
                except ValueError:
                    continue
        raise ArgTypeError(t, value)
    if kind == "enum":
        if not isinstance(value, str):
            raise ArgTypeError(t, value)
        values = schema.enums.get(t.removeprefix("enum "), [])
        for v in values:  # XAPI matches enum names case-insensitively
            if v.lower() == value.lower():
                return v
        raise XapiFailure("INVALID_VALUE", t.removeprefix("enum "), value)
    if kind == "set":
        if not isinstance(value, list):
            raise ArgTypeError(t, value)
        elem = t[: -len(" set")]
        return [convert(schema, elem, v) for v in value]
    if kind == "map":
        if not isinstance(value, dict):
            raise ArgTypeError(t, value)
        kt, vt = split_map_type(t)
        return {convert_key(schema, kt, k): convert(schema, vt, v) for k, v in value.items()}
    if kind == "record":
        if not isinstance(value, dict):
            raise ArgTypeError(t, value)
        return value
    return value


def convert_key(schema: Schema, t: str, key: Any) -> Any:
    # Map keys always travel as strings (struct member names).
    if type_kind(t) == "int":
        return convert(schema, t, key)
    if type_kind(t) == "enum":
        return convert(schema, t, key)
    return str(key)


def convert_args(
    schema: Schema, method: str, types: list[tuple[str, str]], args: list[Any]
) -> list[Any]:
    """Every arg converted per its declared (type, name); FIELD_TYPE_ERROR-style failures."""
    out: list[Any] = []
    for (t, name), value in zip(types, args, strict=False):
        try:
            out.append(convert(schema, t, value))
        except ArgTypeError:
            # XAPI declares FIELD_TYPE_ERROR [field]; the method is logged, not sent.
            raise XapiFailure("FIELD_TYPE_ERROR", name) from None
    out.extend(args[len(types) :])  # extra trailing args (ignored by handlers)
    return out
