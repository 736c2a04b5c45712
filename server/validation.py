"""Params validation: pydantic does the checking, errors are reported the way Ajv 8 does.

xo-cli prints `property @<instancePath>: <message>` for each item of `data.errors` (code 10),
so every item carries xo-server's Ajv shape and key order:
`{instancePath, schemaPath, keyword, params, message}`. The XO-schema derived from the model
(api/xo_schema.py) gives the JSON paths and the declared type names (`must be number,string`
for a union, reported once even though pydantic reports one error per union member).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from api.registry import Method, XoParams
from api.xo_schema import XoSchema
from server.errors import invalid_parameters
from server.limits import ajv_error as _error
from server.limits import pointer

_PYDANTIC_TYPE_NAMES = {
    "string_type": "string",
    "bool_type": "boolean",
    "int_type": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "array",
}


def validate(method: Method, params: Any) -> Any:
    """The handler's params (model instance, or the raw params for unvalidated methods)."""
    model = method.params
    if model is None:
        return params
    if not method.has_params:
        # No declared properties: xo-server applies no `additionalProperties: false` then, so
        # anything goes. Also the hot path (getServerVersion...): skip pydantic entirely.
        empty = _EMPTY.get(model)
        if empty is None:
            empty = _EMPTY[model] = model()
        return empty
    if not isinstance(params, dict):
        # JSON-RPC 1.0 positional params: Ajv checks the whole value against `type: object`.
        raise invalid_parameters(
            [_error("", "#/type", "type", {"type": "object"}, "must be object")]
        )
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise invalid_parameters(ajv_errors(exc, method.schema or {})) from None


_EMPTY: dict[type[XoParams], XoParams] = {}


def _walk(schema: XoSchema, loc: tuple[str | int, ...]) -> tuple[str, str, dict[str, Any]]:
    """Follow `loc` through the schema: (instancePath, schemaPath, node) of the deepest match.

    Stops at the first element that is not a declared property / array index: what is left
    are pydantic's union member tags, which Ajv does not report.
    """
    node: dict[str, Any] = {"type": "object", "properties": schema}
    path, schema_path = "", "#"
    for part in loc:
        props = node.get("properties")
        if isinstance(part, str) and props is not None and part in props:
            node = props[part]
            schema_path += f"/properties/{part}"
        elif isinstance(part, int) and "items" in node:
            node = node["items"]
            schema_path += "/items"
        elif isinstance(part, str) and node.get("type") == "object" and props is None:
            node = {}  # a value inside a free-form object
        else:
            break
        path += pointer((part,))
    return path, schema_path, node


def ajv_errors(exc: ValidationError, schema: XoSchema) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False, include_input=False):
        kind, loc, ctx = err["type"], err["loc"], err.get("ctx") or {}
        if kind in ("missing", "extra_forbidden") and loc:
            path, schema_path, _ = _walk(schema, loc[:-1])
            name = str(loc[-1])
            if kind == "missing":
                item = _error(
                    path,
                    f"{schema_path}/required",
                    "required",
                    {"missingProperty": name},
                    f"must have required property '{name}'",
                )
            else:
                item = _error(
                    path,
                    f"{schema_path}/additionalProperties",
                    "additionalProperties",
                    {"additionalProperty": name},
                    "must NOT have additional properties",
                )
        else:
            path, schema_path, node = _walk(schema, loc)
            item = _convert(kind, ctx, err["msg"], path, schema_path, node)
        key = (item["instancePath"], item["keyword"] + str(item["params"]))
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _convert(
    kind: str, ctx: dict[str, Any], msg: str, path: str, schema_path: str, node: dict[str, Any]
) -> dict[str, Any]:
    if kind in _PYDANTIC_TYPE_NAMES or kind.endswith("_type"):
        declared = node.get("type")
        names = ",".join(declared) if isinstance(declared, list) else declared
        names = names or _PYDANTIC_TYPE_NAMES.get(kind, kind.removesuffix("_type"))
        return _error(path, f"{schema_path}/type", "type", {"type": names}, f"must be {names}")
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return _error(
            path,
            f"{schema_path}/minLength",
            "minLength",
            {"limit": n},
            f"must NOT have fewer than {n} characters",
        )
    if kind == "string_too_long":
        n = ctx.get("max_length")
        return _error(
            path,
            f"{schema_path}/maxLength",
            "maxLength",
            {"limit": n},
            f"must NOT have more than {n} characters",
        )
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return _error(
            path,
            f"{schema_path}/pattern",
            "pattern",
            {"pattern": pattern},
            f'must match pattern "{pattern}"',
        )
    if kind in ("literal_error", "enum"):
        return _error(
            path,
            f"{schema_path}/enum",
            "enum",
            {"allowedValues": node.get("enum", [])},
            "must be equal to one of the allowed values",
        )
    bounds = {
        "greater_than_equal": ("minimum", ">=", "ge"),
        "less_than_equal": ("maximum", "<=", "le"),
        "greater_than": ("exclusiveMinimum", ">", "gt"),
        "less_than": ("exclusiveMaximum", "<", "lt"),
    }
    if kind in bounds:
        keyword, op, ctx_key = bounds[kind]
        limit = ctx.get(ctx_key)
        return _error(
            path,
            f"{schema_path}/{keyword}",
            keyword,
            {"comparison": op, "limit": limit},
            f"must be {op} {limit}",
        )
    # Custom validators (value_error, ...): keep pydantic's sentence, minus its prefix.
    return _error(path, schema_path, kind, {}, msg.removeprefix("Value error, "))
