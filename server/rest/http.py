"""REST plumbing: authentication, JSON errors, collection queries (`fields`, `filter`, `limit`,
`ndjson`) and the decorator every endpoint goes through.

Authentication, as xo-server's REST API: the `authenticationToken` cookie (or the `token`
cookie of the web UI), `Authorization: Bearer <token>`, or HTTP Basic with email and password
(through the sign-in throttle, server/throttle.py). No credentials or bad ones: 401. Any user
may sign in (xo-server's REST API is for admins only): a non-admin sees and acts on what its
ACLs allow, as over JSON-RPC, and gets 403 (code 2) for the rest, whether it exists or not. A
cookie-authenticated POST must pass the cross-site check (server/crosssite.py), else 403.
Bodies: 413 over `max_message_size`, 408 if too slow.

Errors are JSON, in the XO error shape JSON-RPC clients already know (`{message, code, data}`),
with an HTTP status derived from the XO code (`STATUS_BY_CODE`); anything else is 500.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from server import errors
from server.auth import AuthError
from server.crosssite import cross_site_refusal
from server.errors import RpcError, XoError
from server.http_body import BodyError, read_body
from server.limits import check_params
from server.matching import FilterError, compile_string_filter
from server.rest.context import REST, RestContext
from server.storage.records import User
from server.xapi_errors import to_wire_error
from xen.errors import PoolUnavailable, XapiError

log = logging.getLogger("xo_migrate.rest")

BASE = "/rest/v0"
JSON = "application/json"
NDJSON = "application/x-ndjson"

STATUS_BY_CODE = {
    1: 404,  # no such object
    2: 403,  # not enough permissions
    3: 401,  # invalid credentials
    5: 409,  # forbidden operation (already migrating, too late to abort...)
    7: 409,  # no hosts available
    8: 401,  # authentication failed
    9: 503,  # server unreachable (a pool is not connected)
    10: 400,  # invalid parameters
    13: 409,  # VM bad power state
    17: 409,  # VDI in use
    18: 409,  # host offline
    19: 409,  # operation blocked
    25: 409,  # incorrect state
    28: 503,  # service unavailable
}

Handler = Callable[[web.Request, RestContext, User], Awaitable[web.StreamResponse]]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RestError(Exception):
    """An error response decided by the handler itself (status + XO-shaped body)."""

    def __init__(self, status: int, error: XoError | RpcError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def error_response(wire: dict[str, Any], status: int | None = None) -> web.Response:
    return json_response(wire, status or status_of(wire))


def status_of(wire: dict[str, Any]) -> int:
    code = wire.get("code")
    if code == -32000 and (wire.get("data") or {}).get("code") == "TASK_CANCELLED":
        return 409
    return STATUS_BY_CODE.get(code, 500) if isinstance(code, int) else 500


def endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Authenticate, run, and turn any error into a JSON response."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        ctx = request.app[REST]
        user: User | None = None
        try:
            user = await authenticate(request, ctx)
            return await handler(request, ctx, user)
        except RestError as exc:
            return error_response(exc.error.to_wire(), exc.status)
        except BodyError as exc:
            error = XoError(10, str(exc), {"errors": []})
            return error_response(error.to_wire(), exc.status)
        except ValidationError as exc:
            return error_response(invalid_body(exc).to_wire(), 400)
        except (XoError, RpcError, XapiError, PoolUnavailable) as exc:
            admin = user is not None and user.is_admin  # XAPI details: admins only, as JSON-RPC
            return error_response(to_wire_error(exc, is_admin=admin, store=ctx.state.store))
        except Exception as exc:
            log.exception("event=rest_error method=%s path=%s", request.method, request.path)
            admin = user is not None and user.is_admin
            return error_response(to_wire_error(exc, is_admin=admin, store=ctx.state.store), 500)

    return run


def invalid_body(exc: ValidationError) -> XoError:
    details = exc.errors(include_url=False, include_context=False, include_input=False)
    return errors.invalid_parameters([dict(d) for d in details])


async def read_json(request: web.Request, ctx: RestContext) -> Any:
    """The JSON body, read within the size and time limits, its strings and nesting checked."""
    config = ctx.state.config
    raw = await read_body(request, config.connections.body_timeout_s)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RestError(400, errors.invalid_parameters([], f"invalid JSON body: {exc}")) from None
    if isinstance(body, dict | list):
        check_params(body, config.limits)
    return body


# -- authentication --------------------------------------------------------------------------


async def authenticate(request: web.Request, ctx: RestContext) -> User:
    auth = ctx.state.auth
    remote = request.remote or "?"
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    token = value if scheme == "bearer" and value else None
    if token is None:
        token = request.cookies.get("authenticationToken") or request.cookies.get("token")
        if token and request.method not in _SAFE_METHODS:
            # The browser attaches the cookie to cross-site requests too (server/crosssite.py).
            refused = cross_site_refusal(request, ctx.state.config.allowed_origins)
            if refused is not None:
                error = errors.unauthorized()
                raise RestError(403, XoError(error.code, error.message, {"reason": refused}))
    try:
        if token:
            user, _ = await auth.authenticate_token(token, remote)
        elif scheme == "basic" and value:
            email, password = _basic(value)
            user, _ = await auth.sign_in({"email": email, "password": password}, remote)
        else:
            raise RestError(
                401,
                XoError(
                    8,
                    "authentication failed",
                    {
                        "reason": "no credentials: send the authenticationToken cookie, "
                        "Authorization: Bearer <token>, or HTTP Basic"
                    },
                ),
            )
    except XoError as exc:
        raise RestError(401, exc) from None
    except AuthError as exc:  # throttled, empty password
        raise RestError(401, XoError(3, "invalid credentials", {"reason": str(exc)})) from None
    return user


def _basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise RestError(401, errors.invalid_credentials()) from None
    email, sep, password = decoded.partition(":")
    if not sep:
        raise RestError(401, errors.invalid_credentials())
    return email, password


# -- collection queries ----------------------------------------------------------------------


def flag(request: web.Request, name: str) -> bool:
    """`?name`, `?name=true`, `?name=1` are on; absent, `false` and `0` are off."""
    value = request.query.get(name)
    return value is not None and value.lower() not in ("false", "0")


@dataclass(slots=True)
class ListQuery:
    fields: list[str] | None  # None: hrefs only; ["*"]: whole objects
    predicate: Callable[[dict[str, Any]], bool] | None
    limit: int | None
    ndjson: bool

    @classmethod
    def parse(cls, request: web.Request) -> ListQuery:
        raw_fields = request.query.get("fields")
        fields = [f.strip() for f in raw_fields.split(",") if f.strip()] if raw_fields else None
        raw_filter = request.query.get("filter")
        predicate = None
        if raw_filter:
            limits = request.app[REST].state.config.limits
            try:
                predicate = compile_string_filter(
                    raw_filter,
                    max_length=limits.max_filter_length,
                    max_terms=limits.max_filter_terms,
                )
            except FilterError as exc:
                error = {"loc": ["query", "filter"], "msg": str(exc)}
                raise RestError(400, errors.invalid_parameters([error])) from None
        raw_limit = request.query.get("limit")
        limit = None
        if raw_limit is not None:
            try:
                limit = int(raw_limit)
                if limit < 0:
                    raise ValueError
            except ValueError:
                error = {"loc": ["query", "limit"], "msg": "must be a non-negative integer"}
                raise RestError(400, errors.invalid_parameters([error])) from None
        return cls(fields, predicate, limit, flag(request, "ndjson"))

    def select(self, objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for obj in objects:
            if self.limit is not None and len(out) >= self.limit:
                break
            if self.predicate is None or self.predicate(obj):
                out.append(obj)
        return out

    def item(self, obj: dict[str, Any], href: str) -> Any:
        """What one object becomes in a listing: its href, or the asked fields plus `href`."""
        if self.fields is None:
            return href
        if "*" in self.fields:
            return {**obj, "href": href}
        picked = {f: obj[f] for f in self.fields if f in obj}
        picked["href"] = href
        return picked

    def respond(self, items: list[Any]) -> web.Response:
        if self.ndjson:
            body = b"".join(orjson.dumps(i) + b"\n" for i in items)
            return web.Response(body=body, content_type=NDJSON)
        return json_response(items)
