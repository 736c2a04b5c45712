"""The request pipeline, in xo-server's order (xo-server-api.md 1.3):

1. method lookup             -> -32601 `method not found: <name>` (before any auth check)
2. permission                -> code 2 `not enough permissions`
3. `_log` / id aliasing       (xo-server steps 4 and 6)
4. params validation          -> code 10, Ajv-style `data.errors`: first the size limits of
                                 server/limits.py, then the method's model (server/validation.py)
5. object resolution          -> code 1 `no such <type> <id>`; non-admins need the permission
                                 through their ACLs, else code 2, also for an object they may
                                 not view, whether it exists or not (server/access.py)
6. call; a None result answers `true`
7. error mapping              (server/xapi_errors.py)

How jsonrpcserver is used, and why not its dispatcher: this module speaks jsonrpcserver's error
vocabulary (`JsonRpcError`, `NODATA`, the standard codes; server/errors.py), but framing and
dispatch are done here. jsonrpcserver's `dispatch` validates every request with jsonschema
(~100 us a call, ~40 us with that off, against a budget of a few us), answers parse errors and
invalid requests with `id: null` frames (xo-server sends nothing), uses its own error messages
and key order ("Method not found" vs xo-server's `method not found: <name>`), and runs one
request at a time, whereas requests on one WebSocket must run concurrently as tasks owned by the
connection. So the hot path is: orjson parse -> dict lookups -> pydantic `model_validate` ->
handler -> orjson dumps of a dict whose insertion order is the wire key order.

`dispatch()` runs synchronous handlers inline and returns the response bytes; for coroutine
handlers it returns a coroutine that the transport runs as a task.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

import orjson

from api.registry import (
    NULL,
    PERMISSION_LEVELS,
    PUBLIC,
    SIGNED_IN,
    Call,
    Method,
)
from server import errors
from server.access import resolve
from server.auth import AuthError
from server.connection import Connection
from server.limits import check_params
from server.state import ServerState
from server.validation import validate
from server.xapi_errors import to_wire_error

log = logging.getLogger("xo_migrate.dispatch")

_EMPTY_OBJECTS: dict[str, Any] = {}
Reply = bytes | Coroutine[Any, Any, bytes | None]


def success_frame(req_id: Any, result: Any) -> bytes:
    if result is None:
        result = True  # xo-server: undefined is not a JSON-RPC result, `true` stands for it
    elif result is NULL:
        result = None
    return orjson.dumps({"id": req_id, "jsonrpc": "2.0", "result": result})


def error_frame(req_id: Any, error: dict[str, Any]) -> bytes:
    return orjson.dumps({"error": error, "id": req_id, "jsonrpc": "2.0"})


class Dispatcher:
    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._methods = state.registry
        self._store = state.store
        self._acl = state.acl
        self._limits = state.config.limits

    def dispatch(self, caller: Connection, req_id: Any, name: str, params: Any) -> Reply:
        """The response frame for one request, or a coroutine producing it."""
        try:
            method = self._methods.get(name)
            if method is None:
                raise errors.method_not_found(name)
            if method.permission is not PUBLIC:
                self._check_permission(method, caller)
            if params is None:
                params = {}
            elif params:
                check_params(params, self._limits)
                if isinstance(params, dict):
                    params = self._prepare(method, caller, params)
            value = validate(method, params)
            objects = self._resolve(method, params, caller) if method.resolve else _EMPTY_OBJECTS
            call = Call(self._state, caller, method, objects)
            if method.is_async:
                return self._run(call, value, req_id)
            result = method.handler(call, value)
        except Exception as exc:
            return self._error(exc, caller, req_id, name)
        return self._encode(result, caller, req_id, name)

    async def _run(self, call: Call, value: Any, req_id: Any) -> bytes:
        try:
            result = await call.method.handler(call, value)
        except Exception as exc:
            return self._error(exc, call.caller, req_id, call.method.name)
        return self._encode(result, call.caller, req_id, call.method.name)

    def _encode(self, result: Any, caller: Connection, req_id: Any, name: str) -> bytes:
        try:
            return success_frame(req_id, result)
        except TypeError as exc:  # orjson: unserializable result (e.g. an int over 64 bits)
            return self._error(exc, caller, req_id, name)

    def _error(self, exc: Exception, caller: Connection, req_id: Any, name: str) -> bytes:
        # Refused sign-ins are expected (and logged by server/auth.py): no warning for them.
        if not isinstance(exc, errors.XoError | errors.RpcError | AuthError):
            log.warning("event=method_failed method=%s error=%r", name, exc)
        error = to_wire_error(exc, is_admin=caller.is_admin, store=self._store)
        try:
            return error_frame(req_id, error)
        except TypeError:
            return error_frame(req_id, errors.unknown_error().to_wire())

    @staticmethod
    def _check_permission(method: Method, caller: Connection) -> None:
        user = caller.user
        required = method.permission
        if user is None:
            raise errors.unauthorized(None if required == SIGNED_IN else required)
        if required == SIGNED_IN or user.permission == "admin":
            return
        if PERMISSION_LEVELS.get(user.permission, 0) < PERMISSION_LEVELS.get(required or "", 3):
            raise errors.unauthorized(required)

    @staticmethod
    def _prepare(method: Method, caller: Connection, params: dict[str, Any]) -> dict[str, Any]:
        if "_log" in params:
            # Reserved: only admins may pass it, and it never reaches the method.
            if not caller.is_admin:
                raise errors.unauthorized("admin")
            params = {k: v for k, v in params.items() if k != "_log"}
        alias = method.id_alias
        if alias is not None and "id" not in params and isinstance(params.get(alias), str):
            params = dict(params)
            params["id"] = params.pop(alias)
        return params

    def _resolve(self, method: Method, params: Any, caller: Connection) -> dict[str, Any]:
        user = caller.user
        if user is None:
            raise errors.unauthorized()
        if not isinstance(params, dict):
            return {}
        return resolve(method.resolve, params, user, self._store, self._acl)
