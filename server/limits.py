"""Limits on what a client may send and store (`[limits]` in config.example.toml).

Every JSON-RPC call's params (and every REST body) are walked once, iteratively, before
validation: no string (value or key) longer than `max_string_length`, no nesting deeper than
`max_depth`, no object or array of more than `max_items` entries (and no POST batch of more
requests). That bounds whatever a method parses or stores afterwards, so a deep or huge
value can neither overflow a recursive function nor be stored and break other users' answers
later. Finer limits apply where a value is parsed (string filters) or kept per user
(preferences, tokens, one-shot download URLs) or stored for all (ACL entries, groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server import errors


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_string_length: int = 4096  # characters of any string in params (and of any key)
    max_depth: int = 16  # nesting of objects/arrays in params (the params object is 1)
    max_items: int = 10_000  # entries of one object/array in params; requests in a batch
    max_filter_length: int = 1024  # characters of a string filter (xo.getAllObjects, REST)
    max_filter_terms: int = 32  # terms of a string filter
    max_preferences_size: int = 64 * 1024  # bytes of a user's preferences, as JSON
    max_downloads_per_user: int = 16  # one-shot download URLs not fetched yet, per user
    max_acl_entries: int = 10_000  # ACL entries stored, all subjects together
    max_groups: int = 1_000  # user groups stored


def check_params(value: dict[str, Any] | list[Any], limits: InputLimits) -> None:
    """Raise `invalid parameters` (code 10, Ajv-shaped) at the first string too long or
    container too deep; linear in the size of `value`, no recursion."""
    max_length, max_depth, max_items = limits.max_string_length, limits.max_depth, limits.max_items
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if len(node) > max_items:
            raise invalid_value(
                pointer(path), "maxItems", max_items, f"must NOT have more than {max_items} items"
            )
        items = node.items() if type(node) is dict else enumerate(node)
        for key, item in items:
            if type(key) is str and len(key) > max_length:
                raise _too_long(path, max_length, "property name")
            kind = type(item)
            if kind is str:
                if len(item) > max_length:
                    raise _too_long((*path, key), max_length)
            elif kind is dict or kind is list:
                if depth >= max_depth:
                    raise _too_deep((*path, key), max_depth)
                stack.append((item, depth + 1, (*path, key)))


def pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def ajv_error(
    path: str, schema_path: str, keyword: str, params: dict[str, Any], message: str
) -> dict[str, Any]:
    """One item of `data.errors`, in Ajv's key order (what xo-cli prints)."""
    return {
        "instancePath": path,
        "schemaPath": schema_path,
        "keyword": keyword,
        "params": params,
        "message": message,
    }


def _too_long(path: tuple[str | int, ...], limit: int, what: str = "") -> errors.XoError:
    message = f"must NOT have more than {limit} characters"
    if what:
        message = f"{what} {message}"
    return errors.invalid_parameters(
        [ajv_error(pointer(path), "#/maxLength", "maxLength", {"limit": limit}, message)]
    )


def _too_deep(path: tuple[str | int, ...], limit: int) -> errors.XoError:
    message = f"must NOT be nested more than {limit} levels deep"
    return errors.invalid_parameters(
        [ajv_error(pointer(path), "#/maxDepth", "maxDepth", {"limit": limit}, message)]
    )


def invalid_value(path: str, keyword: str, limit: int, message: str) -> errors.XoError:
    """Code 10 for one parameter that breaks a limit (`/filter`, `/preferences`...)."""
    return errors.invalid_parameters(
        [ajv_error(path, f"#/{keyword}", keyword, {"limit": limit}, message)]
    )
