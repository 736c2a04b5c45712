"""system.*: introspection, derived from the method registry (xo-server api/system.mjs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from api.registry import PUBLIC, Call, Method, XoParams
from server import errors
from server.state import API_VERSION, SERVER_VERSION


def get_methods_info(call: Call, params: XoParams) -> dict[str, Any]:
    return call.state.registry.methods_info()


def list_methods(call: Call, params: XoParams) -> list[str]:
    return call.state.registry.names()


class SignatureParams(XoParams):
    method: str


def method_signature(call: Call, params: SignatureParams) -> list[dict[str, Any]]:
    method = call.state.registry.get(params.method)
    if method is None:
        raise errors.no_such_object()
    return [{"name": method.name, **method.info()}]


def get_server_version(call: Call, params: XoParams) -> str:
    return SERVER_VERSION


def get_version(call: Call, params: XoParams) -> str:
    return API_VERSION


def _timezone() -> str:
    if os.environ.get("TZ"):
        return os.environ["TZ"].lstrip(":")
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


def get_server_timezone(call: Call, params: XoParams) -> str:
    return _timezone()


METHODS = [
    Method(
        "system.getMethodsInfo",
        get_methods_info,
        permission=PUBLIC,
        description="returns the signatures of all available API methods",
    ),
    Method(
        "system.listMethods",
        list_methods,
        permission=PUBLIC,
        description="returns the name of all available API methods",
    ),
    Method(
        "system.methodSignature",
        method_signature,
        SignatureParams,
        PUBLIC,
        description="returns the signature of an API method",
    ),
    Method(
        "system.getServerVersion",
        get_server_version,
        permission=PUBLIC,
        description="return the version of xo-migrate",
    ),
    Method(
        "system.getVersion", get_version, permission=PUBLIC, description="API version (unstable)"
    ),
    Method(
        "system.getServerTimezone",
        get_server_timezone,
        description="return the timezone of the server",
    ),
]
