"""Groups, ACL entries and roles (xo-server's subjects.mjs and acls.mjs), and each user's rights.

- A group is `{id, name, users}`; a user's `groups` lists the groups it is in (both sides are
  kept by one membership table, server/db.py).
- An ACL entry `{id, subject, object, action}` gives a user or a group (`subject`) a role
  (`action`) on one object. Its id is derived from the three, as xo-server does, so adding an
  entry that exists changes nothing and is not an error.
- Roles: `viewer` = {view}, `operator` = {view, operate}, `admin` = {view, operate,
  administrate}. An action that is not a role grants the permission of that name (xo-server).
- A user's rights are its own entries and its groups' entries, object id -> permissions; they
  hold through containers as server/acl_rules.py resolves them. Admin users (`permission:
  "admin"`) need none: they pass every check.

Everything is kept in memory (bounded by `max_acl_entries` and `max_groups`) and written
through to SQLite. Rights are computed once per user and dropped when an entry, a group or a
membership that concerns the user changes, so a change applies from the very next call;
listeners (the push hub) are told which users' rights changed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server import errors
from server.acl_rules import NONE, GetObject, XoObject, allowed, grants, owner_id
from server.limits import InputLimits, ajv_error
from server.storage.records import AclRecord, GroupRecord

if TYPE_CHECKING:
    from server.storage import Storage

log = logging.getLogger("xo_migrate.acls")

ROLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("viewer", "Viewer", ("view",)),
    ("operator", "Operator", ("view", "operate")),
    ("admin", "Admin", ("view", "operate", "administrate")),
)
PERMISSIONS_BY_ROLE = {role: perms for role, _name, perms in ROLES}
PERMISSIONS = ("view", "operate", "administrate")
# Actions acl.add accepts: the roles, and the permissions xo-server also grants by name.
ACTIONS = frozenset(PERMISSIONS_BY_ROLE) | frozenset(PERMISSIONS)
_ACL_NAMESPACE = uuid.UUID("5b0bd3a4-7c4e-4d0c-9e0a-3c1f8f4f6a11")

Listener = Callable[[set[str]], None]  # the ids of the users whose rights changed


def acl_id(subject: str, obj: str, action: str) -> str:
    """Deterministic, as xo-server's hash of the three: one entry per (subject, object,
    action)."""
    return str(uuid.uuid5(_ACL_NAMESPACE, f"{subject}\0{obj}\0{action}"))


@dataclass(frozen=True, slots=True)
class Rights:
    """What a non-admin user holds: object id -> permissions, from its entries and its
    groups'; `view` the ids it may view from (its own migrations' owner id included)."""

    user_id: str
    by_object: dict[str, frozenset[str]] = field(default_factory=dict)
    view: frozenset[str] = NONE

    def can(self, obj: XoObject, permission: str, get: GetObject) -> bool:
        if permission == "view":
            return not self.view.isdisjoint(grants(obj, get))
        return allowed(self.by_object, obj, permission, get)


class AccessControl:
    def __init__(self, db: Storage, limits: InputLimits) -> None:
        self._db = db
        self._limits = limits
        self._groups: dict[str, GroupRecord] = {}
        self._acls: dict[str, AclRecord] = {}
        self._by_subject: dict[str, dict[str, AclRecord]] = {}
        self._groups_of: dict[str, list[str]] = {}
        self._rights: dict[str, Rights] = {}
        self._listeners: list[Listener] = []
        # Told after every stored change (a cluster: the other instances reload).
        self.on_stored: Callable[[], None] | None = None

    async def load(self) -> set[str]:
        """(Re)read groups and entries from the store (at start; in a cluster, when another
        instance changed them): the users whose rights may have changed are told."""
        groups = {g.id: g for g in await self._db.groups()}
        acls = {a.id: a for a in await self._db.acls()}
        before = set(self._groups_of) | set(self._by_subject)
        self._groups, self._acls = groups, acls
        self._by_subject = {}
        for acl in acls.values():
            self._by_subject.setdefault(acl.subject, {})[acl.id] = acl
        self._groups_of = {}
        for group in groups.values():
            for uid in group.users:
                self._groups_of.setdefault(uid, []).append(group.id)
        users = before | set(self._groups_of) | set(self._by_subject)
        self._rights.clear()
        self._notify(users)
        return users

    def announce(self) -> None:
        if self.on_stored is not None:
            self.on_stored()

    # -- rights ------------------------------------------------------------------------------

    def rights_of(self, user_id: str) -> Rights:
        rights = self._rights.get(user_id)
        if rights is None:
            rights = self._rights[user_id] = self._compute(user_id)
        return rights

    def _compute(self, user_id: str) -> Rights:
        by_object: dict[str, set[str]] = {}
        for subject in (user_id, *self._groups_of.get(user_id, ())):
            for acl in self._by_subject.get(subject, {}).values():
                perms = PERMISSIONS_BY_ROLE.get(acl.action, (acl.action,))
                by_object.setdefault(acl.object, set()).update(perms)
        frozen = {obj: frozenset(perms) for obj, perms in by_object.items()}
        view = frozenset(obj for obj, perms in frozen.items() if "view" in perms)
        return Rights(user_id, frozen, view | {owner_id(user_id)})

    def permissions_of(self, user_id: str) -> dict[str, dict[str, bool]]:
        """acl.getCurrentPermissions: object id -> {permission: true}, the explicit ones."""
        return {
            obj: {p: True for p in PERMISSIONS if p in perms}
            for obj, perms in self.rights_of(user_id).by_object.items()
        }

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _changed(self, subjects: Iterable[str]) -> None:
        """Rights of these subjects (users, or groups: their members) changed."""
        users: set[str] = set()
        for subject in subjects:
            group = self._groups.get(subject)
            if group is not None:
                users.update(group.users)
            else:
                users.add(subject)
        self._notify(users)

    def _notify(self, users: set[str]) -> None:
        for uid in users:
            self._rights.pop(uid, None)
        if not users:
            return
        for listener in list(self._listeners):
            try:
                listener(users)
            except Exception:  # one broken listener must not keep the others stale
                log.exception("event=acl_listener_failed")

    # -- ACL entries -------------------------------------------------------------------------

    def entries(self) -> list[AclRecord]:
        return list(self._acls.values())

    async def add(self, subject: str, obj: str, action: str) -> AclRecord:
        if action not in ACTIONS:
            allowed_values = [*PERMISSIONS_BY_ROLE, *PERMISSIONS]
            raise errors.invalid_parameters(
                [
                    ajv_error(
                        "/action",
                        "#/properties/action/enum",
                        "enum",
                        {"allowedValues": allowed_values},
                        "must be a role (viewer, operator, admin) or a permission",
                    )
                ]
            )
        await self._check_subject(subject)
        entry_id = acl_id(subject, obj, action)
        existing = self._acls.get(entry_id)
        if existing is not None:
            return existing
        quota = self._limits.max_acl_entries
        if len(self._acls) >= quota:
            raise errors.forbidden_operation(
                "acl.add", f"there are already {quota} ACL entries, the most allowed"
            )
        acl = AclRecord(entry_id, subject, obj, action)
        await self._db.add_acl(acl)
        self.announce()
        self._acls[acl.id] = acl
        self._by_subject.setdefault(subject, {})[acl.id] = acl
        log.info("event=acl_added subject=%s object=%s action=%s", subject, obj, action)
        self._changed([subject])
        return acl

    async def remove(self, subject: str, obj: str, action: str) -> bool:
        acl = self._acls.get(acl_id(subject, obj, action))
        if acl is None:
            return False
        await self._forget([acl])
        log.info("event=acl_removed subject=%s object=%s action=%s", subject, obj, action)
        return True

    async def _forget(self, doomed: list[AclRecord]) -> None:
        if not doomed:
            return
        await self._db.delete_acls([a.id for a in doomed])
        self.announce()
        for acl in doomed:
            del self._acls[acl.id]
            entries = self._by_subject.get(acl.subject, {})
            entries.pop(acl.id, None)
            if not entries:
                self._by_subject.pop(acl.subject, None)
        self._changed({a.subject for a in doomed})

    async def _check_subject(self, subject: str) -> None:
        if subject not in self._groups and not await self._db.user_exists(subject):
            raise errors.no_such_object(subject, ["user", "group"])

    # -- groups ------------------------------------------------------------------------------

    def groups(self) -> list[GroupRecord]:
        return list(self._groups.values())

    def group(self, group_id: str) -> GroupRecord:
        group = self._groups.get(group_id)
        if group is None:
            raise errors.no_such_object(group_id, "group")
        return group

    def groups_of(self, user_id: str) -> list[str]:
        return list(self._groups_of.get(user_id, ()))

    async def create_group(self, name: str) -> GroupRecord:
        quota = self._limits.max_groups
        if len(self._groups) >= quota:
            raise errors.forbidden_operation(
                "group.create", f"there are already {quota} groups, the most allowed"
            )
        group = GroupRecord(str(uuid.uuid4()), name)
        await self._db.add_group(group)
        self.announce()
        self._groups[group.id] = group
        log.info("event=group_created group=%s", group.id)
        return group

    async def rename_group(self, group_id: str, name: str) -> None:
        group = self.group(group_id)
        await self._db.rename_group(group_id, name)
        self.announce()
        group.name = name
        log.info("event=group_renamed group=%s", group_id)

    async def delete_group(self, group_id: str) -> list[str]:
        """Delete the group and its entries; its former members' ids."""
        group = self.group(group_id)
        await self._db.delete_group(group_id)
        self.announce()
        members = list(group.users)
        del self._groups[group_id]
        for entry_id in self._by_subject.pop(group_id, {}):
            self._acls.pop(entry_id, None)
        for uid in members:
            self._drop_membership(uid, group_id)
        log.info("event=group_deleted group=%s members=%d", group_id, len(members))
        self._notify(set(members))
        return members

    async def set_group_users(self, group_id: str, user_ids: Collection[str]) -> list[str]:
        """The members become `user_ids` (each must exist); the users whose membership
        changed."""
        group = self.group(group_id)
        wanted = list(dict.fromkeys(user_ids))
        for uid in wanted:
            if not await self._db.user_exists(uid):
                raise errors.no_such_object(uid, "user")
        await self._db.set_group_users(group_id, wanted)
        self.announce()
        before, after = set(group.users), set(wanted)
        group.users = [u for u in group.users if u in after] + [
            u for u in wanted if u not in before
        ]
        for uid in before - after:
            self._drop_membership(uid, group_id)
        for uid in after - before:
            self._groups_of.setdefault(uid, []).append(group_id)
        changed = before ^ after
        log.info("event=group_users_set group=%s members=%d", group_id, len(group.users))
        self._changed(changed)
        return sorted(changed)

    async def add_user(self, group_id: str, user_id: str) -> None:
        group = self.group(group_id)
        await self.set_group_users(group_id, [*group.users, user_id])

    async def remove_user(self, group_id: str, user_id: str) -> None:
        group = self.group(group_id)
        if not await self._db.user_exists(user_id):
            raise errors.no_such_object(user_id, "user")
        await self.set_group_users(group_id, [u for u in group.users if u != user_id])

    def _drop_membership(self, user_id: str, group_id: str) -> None:
        mine = self._groups_of.get(user_id)
        if mine is not None and group_id in mine:
            mine.remove(group_id)
            if not mine:
                del self._groups_of[user_id]

    # -- users -------------------------------------------------------------------------------

    def forget_user(self, user_id: str) -> None:
        """The user was deleted (its rows went with it): its entries and memberships."""
        for acl in self._by_subject.pop(user_id, {}).values():
            self._acls.pop(acl.id, None)
        for group_id in self._groups_of.pop(user_id, []):
            group = self._groups.get(group_id)
            if group is not None and user_id in group.users:
                group.users.remove(user_id)
        self._changed([user_id])
