"""Turn a failed call into the error object a client sees (xo-server-api.md 1.3 step 11, 1.4.3).

Order of the rules, as xo-server applies them:

(a) a XAPI code listed in `XAPI_TO_XO` becomes that XO error, for every user; refs in the
    params are converted to XO ids through the object store when known;
(b) any other error that is not an XO error: admins get -32000 with the original message and
    the serialized error in `data` (`code`, `params`, `task` / `call` for XAPI failures);
(c) non-admins get -32000 `unknown error from the peer`, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server import errors
from server.errors import RpcError, XoError
from server.storage.base import StorageUnavailable
from xen.errors import PoolUnavailable, XapiError
from xen.store import ObjectStore

RefToId = Callable[[str | None], str | None]

XAPI_TO_XO: dict[str, Callable[[list[str], RefToId], XoError]] = {
    "EHOSTUNREACH": lambda p, ref: errors.server_unreachable(ref(_at(p, 0))),
    "HOST_OFFLINE": lambda p, ref: errors.host_offline(ref(_at(p, 0))),
    "NO_HOSTS_AVAILABLE": lambda p, ref: errors.no_hosts_available(),
    "NOT_SUPPORTED_DURING_UPGRADE": lambda p, ref: errors.not_supported_during_upgrade(),
    "OPERATION_BLOCKED": lambda p, ref: errors.operation_blocked(ref(_at(p, 0)), _at(p, 1)),
    "PIF_VLAN_EXISTS": lambda p, ref: errors.object_already_exists(ref(_at(p, 0)), "PIF"),
    "SESSION_AUTHENTICATION_FAILED": lambda p, ref: errors.authentication_failed(),
    "VDI_IN_USE": lambda p, ref: errors.vdi_in_use(ref(_at(p, 0)), _at(p, 1)),
    "VM_BAD_POWER_STATE": lambda p, ref: errors.vm_bad_power_state(
        ref(_at(p, 0)), _at(p, 1), _at(p, 2)
    ),
    "VM_IS_TEMPLATE": lambda p, ref: errors.vm_is_template(ref(_at(p, 0))),
    "VM_LACKS_FEATURE": lambda p, ref: errors.vm_lacks_feature(ref(_at(p, 0))),
    "VM_LACKS_FEATURE_SHUTDOWN": lambda p, ref: errors.vm_lacks_feature(ref(_at(p, 0)), "shutdown"),
    "VM_MISSING_PV_DRIVERS": lambda p, ref: errors.vm_missing_pv_drivers(ref(_at(p, 0))),
}


def _at(params: list[str], index: int) -> str | None:
    return params[index] if index < len(params) else None


def ref_resolver(store: ObjectStore) -> RefToId:
    """XAPI refs are unique per pool only; XapiError does not say which pool, so try each."""

    def to_id(ref: str | None) -> str | None:
        if ref is None or not ref.startswith("OpaqueRef:"):
            return ref
        for pool in store.by_type("pool"):
            obj_id = store.id_of_ref(pool["id"], ref)
            if obj_id is not None:
                return obj_id
        return ref

    return to_id


def to_wire_error(exc: BaseException, *, is_admin: bool, store: ObjectStore) -> dict[str, Any]:
    """The `error` member of the response for `exc` raised by a method."""
    if isinstance(exc, XoError | RpcError):
        return exc.to_wire()
    if isinstance(exc, XapiError):
        factory = XAPI_TO_XO.get(exc.code)
        if factory is not None:
            return factory(exc.params, ref_resolver(store)).to_wire()
        if not is_admin:
            return errors.unknown_error().to_wire()
        data: dict[str, Any] = {"code": exc.code, "params": exc.params}
        if exc.task is not None:
            data["task"] = exc.task
        if exc.call is not None:
            data["call"] = exc.call
        data["message"] = str(exc)
        data["name"] = "XapiError"
        return errors.server_error(str(exc), data).to_wire()
    if isinstance(exc, StorageUnavailable):
        # Redis lost (a cluster): reads go on from this instance's copy, changes are refused.
        return errors.service_unavailable_because("database", str(exc)).to_wire()
    if isinstance(exc, PoolUnavailable):
        # xo-server would not find the pool's objects at all; say which pool is unreachable.
        return errors.server_unreachable(exc.pool).to_wire()
    if not is_admin:
        return errors.unknown_error().to_wire()
    message = str(exc) or type(exc).__name__
    return errors.server_error(message, {"message": message, "name": type(exc).__name__}).to_wire()
