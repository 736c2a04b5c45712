"""Where a right on an object may come from: xo-server's container rules (xo-acl-resolver).

An ACL entry gives a subject a role on one object; the right it holds (view, operate,
administrate) also holds on what that object contains, as xo-server resolves it. For each XO
type, `RULES` lists the sources of a right, any one of which suffices:

- `SELF`: an entry on the object itself (types without it take no right of their own: a right
  on a task is not a right, the host's is);
- a field naming another object (`$container`, `$pool`, `VDI`...): a right on that object,
  itself resolved by its own rules; the object must be in the collection and of the same pool
  (an id two pools have during a cross-pool move is the source's: xen/store.py), and a field
  naming the object itself is ignored;
- `VBD_VMS` (VDIs): a right on any VM the VDI is plugged into (through its `$VBDs`);
- `OWNER` (our migration and batch objects): the user who started it (`owner:<user id>`, a
  pseudo object every user holds `view` on).

Types not listed take rights on themselves only (pool, SM...). xo-server's `USB_group` rule
(a right on all its PUSBs together) is left out: xo-migrate does not publish USB groups.

`grants(obj, get)` is the set of ids whose rights hold for `obj` (the same for every
permission: the rules do not depend on it); `grants_and_links` also gives the ids it reads to
find them, which server/views.py follows backwards to re-evaluate what depends on a changed
object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

XoObject = dict[str, Any]
GetObject = Callable[[str], XoObject | None]
Grants = frozenset[str]

SELF = "<self>"
VBD_VMS = "<VMs of the VBDs>"
OWNER = "<owner>"
OWNER_PREFIX = "owner:"

RULES: dict[str, tuple[str, ...]] = {
    "host": (SELF, "$pool"),
    "message": ("$object",),
    "network": (SELF, "$pool"),
    "PBD": ("host", "SR"),
    "PCI": ("$host",),
    "PIF": ("$host",),
    "PUSB": ("host",),
    "SR": (SELF, "$container"),
    "task": ("$host",),
    "VBD": ("VDI",),
    "VDI": ("$SR", VBD_VMS),
    "VDI-snapshot": ("$snapshot_of",),
    "VIF": ("$network", "$VM"),
    "VM": (SELF, "$container"),
    "VM-controller": ("$container",),
    "VM-snapshot": (SELF, "$snapshot_of"),
    "VM-template": (SELF, "$pool"),
    "VUSB": ("vm",),
    "migration": ("vm", OWNER),
    "migrationBatch": (OWNER,),
}
_DEFAULT = (SELF,)
NONE: Grants = frozenset()


def owner_id(user_id: str) -> str:
    """The pseudo object a user holds `view` on: the migrations and batches it started."""
    return OWNER_PREFIX + user_id


def grants(obj: XoObject, get: GetObject, memo: dict[str, Grants] | None = None) -> Grants:
    """Ids whose rights hold for `obj`. `memo` shares the answers of one pass (a flush)."""
    if memo is None:
        memo = {}
    known = memo.get(obj["id"])
    if known is not None:
        return known
    own, members, _read = _direct(obj, get)
    return _grants(obj, own, members, get, memo)


def grants_and_links(
    obj: XoObject, get: GetObject, memo: dict[str, Grants]
) -> tuple[Grants, tuple[str, ...]]:
    """`grants(obj)`, and the ids it reads directly: when one of them changes, so may its
    grants (server/views.py follows them backwards)."""
    own, members, read = _direct(obj, get)
    known = memo.get(obj["id"])
    found = known if known is not None else _grants(obj, own, members, get, memo)
    return found, (*(i for i in own if i != obj["id"]), *members, *read)


def _grants(
    obj: XoObject, own: list[str], members: list[str], get: GetObject, memo: dict[str, Grants]
) -> Grants:
    memo[obj["id"]] = NONE  # a cycle of links grants nothing more
    out = set(own)
    for member_id in members:
        _member(obj, member_id, get, memo, out)
    result = memo[obj["id"]] = frozenset(out)
    return result


def _direct(obj: XoObject, get: GetObject) -> tuple[list[str], list[str], list[str]]:
    """What the rules name for `obj`: the ids that grant by themselves (the object, its
    owner), the objects that grant through their own rules (members), and the other ids read
    to find them (a VDI's VBDs)."""
    own: list[str] = []
    members: list[str] = []
    read: list[str] = []
    for source in RULES.get(obj["type"], _DEFAULT):
        if source is SELF:
            own.append(obj["id"])
        elif source is OWNER:
            user = obj.get("user")
            if isinstance(user, str) and user:
                own.append(owner_id(user))
        elif source is VBD_VMS:
            for vbd_id in _ids(obj.get("$VBDs")):
                read.append(vbd_id)
                vbd = get(vbd_id)
                if vbd is not None and isinstance(vbd.get("VM"), str):
                    members.append(vbd["VM"])
        else:
            member = obj.get(source)
            if isinstance(member, str) and member != obj["id"]:
                members.append(member)
    return own, members, read


def _member(
    obj: XoObject, member_id: str, get: GetObject, memo: dict[str, Grants], out: set[str]
) -> None:
    member = get(member_id)
    if member is None:
        return
    pool, member_pool = obj.get("$pool"), member.get("$pool")
    if pool and member_pool and pool != member_pool:
        # The id is another pool's object: a VM being received from another pool has the
        # same uuid as the running one its source pool still publishes; the disks and cards
        # the target pool made for it are not that VM's.
        return
    out.update(grants(member, get, memo))


def _ids(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def allowed(
    rights: Mapping[str, frozenset[str]], obj: XoObject, permission: str, get: GetObject
) -> bool:
    """Whether `rights` (object id -> permissions) give `permission` on `obj`."""
    if not rights:
        return False
    return any(permission in rights.get(g, NONE) for g in grants(obj, get))
