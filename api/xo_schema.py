"""Derive xo-server's XO-style param schema from a pydantic params model.

XO-schema (what `system.getMethodsInfo` shows and xo-cli `list-commands` prints): a mapping of
param name to `{"type": ..., "optional": true?, "default"?, "description"?, "properties"?,
"items"?, "enum"?}`, where `type` is a string or a list of strings.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

XoSchema = dict[str, dict[str, Any]]

_SCALARS: dict[Any, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
}


def params_schema(model: type[BaseModel]) -> XoSchema:
    return {(f.alias or name): _field_schema(f) for name, f in model.model_fields.items()}


def _field_schema(info: FieldInfo) -> dict[str, Any]:
    prop = type_schema(info.annotation)
    if not info.is_required():
        prop["optional"] = True
        if info.default is not None and info.default is not PydanticUndefined:
            prop["default"] = info.default
    if info.description:
        prop["description"] = info.description
    return prop


def type_schema(annotation: Any) -> dict[str, Any]:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return type_schema(members[0])
        names: list[str] = []
        for member in members:
            t = type_schema(member).get("type")
            for name in t if isinstance(t, list) else [t] if t else []:
                if name not in names:
                    names.append(name)
        return {"type": names}
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": _SCALARS.get(type(values[0]), "string"), "enum": values}
    if origin is list:
        args = get_args(annotation)
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"type": "object", "properties": params_schema(annotation)}
    name = _SCALARS.get(annotation)
    return {"type": name} if name else {}
