"""Resolving the objects a call names and checking the caller's rights on them: xo-server's
`resolveParams` + `checkPermissions`, for the JSON-RPC dispatcher and the REST API.

Each spec is `(param, types[, permission[, EACH_VALUE]])` (api/registry.py). In spec order:

- admins pass every check; a missing object (or one of another type) is `no such <type> <id>`
  (code 1), as xo-server answers everyone;
- a non-admin needs `permission` on the object through its ACLs (server/acls.py, resolved
  through containers by server/acl_rules.py), else code 2 `not enough permissions` with
  `data {permission, object: {id}}`. An object it may not view gets that same answer whether
  it exists or not (xo-server answers code 1 first, which tells anyone what exists); one it
  may view but of another type is code 1, as for an admin;
- `permission` None: no check, the object is only looked up (code 1), as in xo-server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.registry import DEFAULT_OBJECT_PERMISSION, EACH_VALUE, ResolveSpec
from server import errors
from server.acls import AccessControl, Rights
from server.storage.records import User
from xen.store import ObjectStore


def resolve(
    specs: ResolveSpec,
    params: Mapping[str, Any],
    user: User,
    store: ObjectStore,
    acl: AccessControl,
) -> dict[str, Any]:
    """`{key: object}` (`{key: {map key: object}}` for EACH_VALUE specs), or the refusal."""
    rights = None if user.is_admin else acl.rights_of(user.id)
    objects: dict[str, Any] = {}
    for key, spec in specs.items():
        param, types = spec[0], spec[1]
        permission = spec[2] if len(spec) > 2 else DEFAULT_OBJECT_PERMISSION
        value = params.get(param)
        if value is None:
            continue
        if len(spec) > 3 and spec[3] == EACH_VALUE:
            if isinstance(value, dict):
                objects[key] = {
                    k: _one(v, types, permission, rights, store) for k, v in value.items()
                }
            continue
        objects[key] = _one(value, types, permission, rights, store)
    return objects


def _one(
    obj_id: Any,
    types: str | tuple[str, ...],
    permission: str | None,
    rights: Rights | None,
    store: ObjectStore,
) -> dict[str, Any]:
    obj = store.get(obj_id) if isinstance(obj_id, str) else None
    allowed_types = (types,) if isinstance(types, str) else types
    right_type = obj is not None and obj.get("type") in allowed_types
    if rights is not None and permission:
        get = store.get
        if obj is None or not rights.can(obj, "view" if not right_type else permission, get):
            raise errors.unauthorized(permission, obj_id if isinstance(obj_id, str) else None)
    if obj is None or not right_type:
        raise errors.no_such_object(obj_id, types if isinstance(types, str) else list(types))
    return obj
