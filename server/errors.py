"""XO API errors, serialized exactly as xo-server puts them on the wire.

Two families exist (xo-server-api.md 1.4):

- XO errors (xo-common `api-errors`): `{"message", "code", "data"}` in that key order, `data`
  omitted when the factory has none and `undefined` members dropped.
- JSON-RPC errors (json-rpc-protocol): `{"code", "data", "message"}` in that key order; used for
  -32601 (method not found) and -32000 (anything that is not an XO error).

Both subclass jsonrpcserver's `JsonRpcError` (code, message, data, NODATA sentinel) so code that
knows jsonrpcserver can raise and catch them; `to_wire()` is what goes on the wire.
"""

from __future__ import annotations

from typing import Any

from jsonrpcserver.codes import ERROR_METHOD_NOT_FOUND, ERROR_SERVER_ERROR
from jsonrpcserver.exceptions import JsonRpcError
from jsonrpcserver.sentinels import NODATA

UNKNOWN_ERROR_MESSAGE = "unknown error from the peer"


def _defined(**members: Any) -> dict[str, Any]:
    """JSON.stringify drops `undefined` members: so do we (None stands for undefined)."""
    return {k: v for k, v in members.items() if v is not None}


class XoError(JsonRpcError):
    """An xo-common XoError: serialized as {"message", "code", "data"?}."""

    def __init__(self, code: int, message: str, data: Any = NODATA) -> None:
        super().__init__(code, message, data)
        Exception.__init__(self, message)

    def to_wire(self) -> dict[str, Any]:
        if self.data is NODATA:
            return {"message": self.message, "code": self.code}
        return {"message": self.message, "code": self.code, "data": self.data}


class RpcError(JsonRpcError):
    """A json-rpc-protocol JsonRpcError: serialized as {"code", "data"?, "message"}."""

    def __init__(self, code: int, message: str, data: Any = NODATA) -> None:
        super().__init__(code, message, data)
        Exception.__init__(self, message)

    def to_wire(self) -> dict[str, Any]:
        if self.data is NODATA:
            return {"code": self.code, "message": self.message}
        return {"code": self.code, "data": self.data, "message": self.message}


# -- JSON-RPC level ----------------------------------------------------------------------------


def method_not_found(name: str) -> RpcError:
    return RpcError(ERROR_METHOD_NOT_FOUND, f"method not found: {name}", name)


def unknown_error() -> RpcError:
    """What a non-admin sees for any error that is not an XO error (hides internals)."""
    return RpcError(ERROR_SERVER_ERROR, UNKNOWN_ERROR_MESSAGE)


def server_error(message: str, data: dict[str, Any]) -> RpcError:
    """What an admin sees for a non-XO error: the original message plus serialized details."""
    return RpcError(ERROR_SERVER_ERROR, message, data)


# -- XO errors (xo-common api-errors, codes 0..28) -----------------------------------------------


def no_such_object(obj_id: Any = None, obj_type: str | list[str] | None = None) -> XoError:
    type_text = ",".join(obj_type) if isinstance(obj_type, list) else obj_type
    # Template literals print a missing id as "undefined" (`noSuchObject()`).
    id_text = "undefined" if obj_id is None else str(obj_id)
    return XoError(
        1, f"no such {type_text or 'object'} {id_text}", _defined(id=obj_id, type=obj_type)
    )


def unauthorized(
    permission: str | None = None, object_id: str | None = None, object_type: str | None = None
) -> XoError:
    return XoError(
        2,
        "not enough permissions",
        _defined(permission=permission, object=_defined(id=object_id, type=object_type)),
    )


def invalid_credentials() -> XoError:
    return XoError(3, "invalid credentials")


def forbidden_operation(operation: str, reason: str | None = None) -> XoError:
    return XoError(
        5, f"forbidden operation: {operation}", _defined(operation=operation, reason=reason)
    )


def no_hosts_available() -> XoError:
    return XoError(7, "no hosts available")


def authentication_failed() -> XoError:
    return XoError(8, "authentication failed")


def server_unreachable(object_id: str | None = None) -> XoError:
    return XoError(9, "server unreachable", _defined(objectId=object_id))


def invalid_parameters(
    errors: list[dict[str, Any]], message: str = "invalid parameters"
) -> XoError:
    return XoError(10, message, {"errors": errors})


def vm_missing_pv_drivers(vm: str | None) -> XoError:
    return XoError(11, "missing PV drivers", _defined(objectId=vm))


def vm_is_template(vm: str | None) -> XoError:
    return XoError(12, "VM is a template", _defined(objectId=vm))


def vm_bad_power_state(vm: str | None, expected: str | None, actual: str | None) -> XoError:
    return XoError(
        13,
        f"VM state is {actual} but should be {expected}",
        _defined(objectId=vm, expected=expected, actual=actual),
    )


def vm_lacks_feature(vm: str | None, feature: str | None = None) -> XoError:
    return XoError(14, f"VM lacks feature {feature or ''}", _defined(objectId=vm, feature=feature))


def not_supported_during_upgrade() -> XoError:
    return XoError(15, "not supported during upgrade")


def object_already_exists(object_id: str | None, object_type: str | None = None) -> XoError:
    return XoError(
        16,
        f"{object_type or 'object'} already exists",
        _defined(objectId=object_id, objectType=object_type),
    )


def vdi_in_use(vdi: str | None, operation: str | None = None) -> XoError:
    return XoError(17, "VDI in use", _defined(objectId=vdi, operation=operation))


def host_offline(host: str | None) -> XoError:
    return XoError(18, "host offline", _defined(objectId=host))


def operation_blocked(object_id: str | None, code: str | None = None) -> XoError:
    return XoError(19, "operation blocked", _defined(objectId=object_id, code=code))


def service_unavailable(service_name: str) -> XoError:
    return XoError(28, "service unavailable", {"serviceName": service_name})


def service_unavailable_because(service_name: str, reason: str) -> XoError:
    """`service unavailable` with a reason a person can read (the shared database lost)."""
    return XoError(28, "service unavailable", {"serviceName": service_name, "reason": reason})
