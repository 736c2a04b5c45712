"""API methods are data: this module defines how a method is declared and the registry of them.

Adding a namespace (e.g. `vm`):

1. Create `api/vm.py`. Declare one pydantic params model per method (subclass `XoParams`:
   strict, unknown keys rejected, strings non-empty; optional fields default to `OPTIONAL` so
   an explicit `null` is rejected as xo-server's Ajv does), one handler per method, and a
   module-level `METHODS: list[Method]`::

       class MigrateParams(XoParams):
           vm: str
           targetHost: str
           force: bool = OPTIONAL

       async def migrate(call: Call, params: MigrateParams) -> None:
           vm = call.objects["vm"]          # resolved by the dispatcher, type checked
           ...                              # returning None answers `true`

       METHODS = [
           Method("vm.migrate", migrate, MigrateParams,
                  resolve={"vm": ("vm", "VM"), "host": ("targetHost", "host")}),
       ]

2. Add `"vm"` to `NAMESPACES` in `api/__init__.py`. `system.getMethodsInfo`,
   `system.listMethods` and `system.methodSignature` pick the methods up automatically.

Handlers may be plain functions (run inline: cheapest) or coroutines (run as a task owned by the
calling connection, so they are cancelled when it closes). Work that must outlive the caller
(migrations) belongs to a server-owned service reached through `call.state`, and the handler
only awaits it.

Permissions: `PUBLIC` (None, no sign-in; xo-server `permission = null`), `SIGNED_IN` (any
signed-in user; xo-server leaves `permission` undefined), or a level: "read" < "write" <
"admin". `resolve` maps a key of `call.objects` to `(param name, XO type or types)` or
`(param name, types, permission on the object)`: "administrate" when not given, as in
xo-server ("view", "operate", or None for no check); a fourth member `EACH_VALUE` says the
param is an object whose values are the ids (`mapVdisSrs`: every SR), and `call.objects[key]`
is then `{param key: object}`. Admins pass every check and get `no such <type> <id>` (code 1)
for a missing object. Others need the permission through their ACLs (server/access.py);
code 2 names the object and the permission, and is also the answer for an object they may
not view, whether it exists or not.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from api.xo_schema import XoSchema, params_schema

if TYPE_CHECKING:
    from server.connection import Connection
    from server.state import ServerState
    from server.storage.records import User

PUBLIC: None = None
SIGNED_IN = "unset"
PERMISSION_LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}

# Default of an optional field: pydantic does not validate defaults, so the declared type stays
# strict (an explicit null is a type error, as in xo-server) while an absent key reads as None.
OPTIONAL: Any = None


class _JsonNull:
    """A handler's way to answer `null`: returning None answers `true`, as xo-server turns an
    undefined result into `true`, while a method returning JavaScript `null` answers null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NULL"


NULL: Any = _JsonNull()


class XoParams(BaseModel):
    """Base of every params model: xo-server's Ajv rules (no coercion, no extra keys, no '')."""

    model_config = ConfigDict(extra="forbid", strict=True, str_min_length=1, frozen=True)


class NoParams(XoParams):
    """A method without parameters: like xo-server, whatever params are sent are ignored."""


Handler = Callable[..., Any]
ObjectTypes = str | tuple[str, ...]
ResolveSpec = Mapping[
    str,
    tuple[str, ObjectTypes]
    | tuple[str, ObjectTypes, str | None]
    | tuple[str, ObjectTypes, str | None, str],
]  # key -> (param, types[, permission on the object, default "administrate"[, EACH_VALUE]])
DEFAULT_OBJECT_PERMISSION = "administrate"
EACH_VALUE = "each value"  # the param is {key: id}: every value is resolved and checked


@dataclass(slots=True)
class Method:
    name: str
    handler: Handler
    # None: no validation; the handler receives the params dict as sent (session.signIn).
    params: type[XoParams] | None = NoParams
    permission: str | None = SIGNED_IN
    resolve: ResolveSpec = field(default_factory=dict)
    description: str | None = None
    # XO-schema shown by getMethodsInfo; derived from `params` unless given.
    schema: XoSchema | None = None
    is_async: bool = field(init=False)
    has_params: bool = field(init=False)
    # xo-server's id aliasing (api.mjs step 6): `vm.start vm=X` means `id=X`.
    id_alias: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.handler)
        if self.schema is None:
            self.schema = params_schema(self.params) if self.params is not None else {}
        self.has_params = bool(self.params is not None and self.params.model_fields)
        namespace = self.name.split(".", 1)[0]
        self.id_alias = namespace if "id" in self.schema and namespace not in self.schema else None

    def info(self) -> dict[str, Any]:
        """One entry of system.getMethodsInfo: undefined keys omitted, `null` for public."""
        entry: dict[str, Any] = {}
        if self.description is not None:
            entry["description"] = self.description
        entry["params"] = self.schema
        if self.permission != SIGNED_IN:
            entry["permission"] = self.permission
        return entry


@dataclass(slots=True)
class Call:
    """What a handler gets besides its params: who calls, resolved objects, the server."""

    state: ServerState
    caller: Connection
    method: Method
    objects: dict[str, Any]

    @property
    def user(self) -> User | None:
        return self.caller.user


class Registry:
    def __init__(self, methods: Iterable[Method] = ()) -> None:
        self._methods: dict[str, Method] = {}
        self._info: dict[str, Any] | None = None
        for method in methods:
            self.add(method)

    def add(self, method: Method) -> None:
        if method.name in self._methods:
            raise ValueError(f"duplicate API method {method.name}")
        self._methods[method.name] = method
        self._info = None

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return list(self._methods)

    def methods_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = {name: m.info() for name, m in self._methods.items()}
        return self._info

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)
