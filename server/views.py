"""What each non-admin user may view, kept current as objects, containers and rights change.

xo-server sends every object to every signed-in user; xo-migrate sends a non-admin only the
objects it may `view` (server/acl_rules.py: a right on the object or on a container of it).
Admins see everything and cost nothing here: until the first non-admin needs it, nothing is
indexed.

The index, built once a non-admin first needs it and kept current on every flush after that:
- `grants`: object id -> the ids whose rights hold for it (acl_rules.grants);
- `links` / `dependents`: the ids each object's grants read, and the reverse (who depends on
  whom), so that when an object's grants change (a VM moved to another host or pool, a host
  arrived after its VMs, an object left) everything that depends on it is evaluated again.

A `ViewGroup` holds the signed-in connections of one non-admin user (the push hub's, owner
rights make visibility per user) and the ids it may view now; `viewers` maps each id a group
holds `view` on to the groups, so a changed object finds the groups that see it from its own
few grants, whatever the number of groups. `apply` (each store flush) and `refresh` (rights
changed) return, per group, the ids that enter its view (or changed while in it) and those
that leave it; the push hub turns them into `enter` and `exit` notifications.

Between flushes a group's view is that of the last flush, as the notifications it was sent:
`xo.getAllObjects` answered from it agrees with the push stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from server import errors
from server.acl_rules import Grants, grants_and_links
from server.acls import AccessControl, Rights
from xen.store import ChangeSet, ObjectStore

if TYPE_CHECKING:
    from server.connection import Connection
    from server.push import Outbox
    from server.storage.records import User

_NO_GROUPS: frozenset[ViewGroup] = frozenset()


class ViewGroup:
    """The signed-in connections of one non-admin user, and what it may view."""

    __slots__ = ("members", "rights", "user_id", "visible")

    def __init__(self, rights: Rights) -> None:
        self.user_id = rights.user_id
        self.rights = rights
        self.visible: set[str] = set()
        self.members: dict[Connection, Outbox] = {}

    def __repr__(self) -> str:
        return f"ViewGroup(user={self.user_id}, visible={len(self.visible)})"


@dataclass(slots=True)
class Delta:
    """For one group: ids entering its view (or changed within it), ids leaving it."""

    enter: list[str] = field(default_factory=list)
    exit: list[str] = field(default_factory=list)


Deltas = dict[ViewGroup, Delta]


class Views:
    def __init__(self, store: ObjectStore, acl: AccessControl) -> None:
        self.store = store
        self.acl = acl
        self._groups: dict[str, ViewGroup] = {}
        self._viewers: dict[str, set[ViewGroup]] = {}
        self._grants: dict[str, Grants] | None = None  # None: not indexed yet
        self._links: dict[str, tuple[str, ...]] = {}
        self._dependents: dict[str, set[str]] = {}

    # -- reads -------------------------------------------------------------------------------

    def visible_ids(self, user: User) -> Collection[str] | None:
        """The ids `user` may view (as of the last flush); None for an admin: all. A user
        with signed-in connections gets its group's live set: read it, do not keep it."""
        if user.is_admin:
            return None
        group = self._groups.get(user.id)
        if group is not None:
            return group.visible
        self._ensure_index()
        rights = self.acl.rights_of(user.id)
        return self._visible(rights, self._reach(rights.view))

    def visible_objects(self, user: User, obj_type: str | None = None) -> Iterable[dict[str, Any]]:
        """The objects `user` may view (of `obj_type` if given)."""
        ids = self.visible_ids(user)
        if ids is None:
            return self.store.by_type(obj_type) if obj_type else self.store.all().values()
        get = self.store.get
        objects = (obj for i in list(ids) if (obj := get(i)) is not None)
        return (o for o in objects if o["type"] == obj_type) if obj_type else objects

    def can(self, user: User, obj: dict[str, Any], permission: str = "view") -> bool:
        """Whether `user` holds `permission` on `obj` now."""
        return user.is_admin or self.acl.rights_of(user.id).can(obj, permission, self.store.get)

    async def record_for(
        self,
        user: User,
        lookup: Callable[[str], Awaitable[dict[str, Any]]],
        record_id: str,
        obj_type: str,
    ) -> dict[str, Any] | None:
        """The migration (or batch) record `lookup` gives (read from the store before the
        rules decide), if `user` may see it; None when it may not, and also when there is
        none, so that it cannot tell. An admin gets `lookup`'s own error for an unknown id."""
        if user.is_admin:
            return await lookup(record_id)
        try:
            record = await lookup(record_id)
        except errors.XoError as exc:
            if exc.code != 1:  # anything but `no such object`
                raise
            return None
        return record if self.can_see_record(user, record, obj_type) else None

    def can_see_record(self, user: User, record: dict[str, Any], obj_type: str) -> bool:
        """A migration (or batch) record, live or from the history: its owner sees it, and
        those who may view its VM."""
        rule_fields = {"id": record["id"], "type": obj_type}  # what acl_rules reads of it
        return self.can(user, rule_fields | {"vm": record.get("vm"), "user": record.get("user")})

    def can_cancel(self, user: User, record: dict[str, Any]) -> bool:
        """A migration: its owner cancels it, and those who may administrate its VM."""
        if user.is_admin or record.get("user") == user.id:
            return True
        vm = self.store.get(record.get("vm") or "")
        return vm is not None and self.can(user, vm, "administrate")

    # -- groups ------------------------------------------------------------------------------

    def group_for(self, user_id: str) -> ViewGroup:
        """The group of a non-admin user, made with its current view if it has none."""
        group = self._groups.get(user_id)
        if group is not None:
            return group
        self._ensure_index()
        group = ViewGroup(self.acl.rights_of(user_id))
        self._hold(group, group.rights.view)
        group.visible = self._visible(group.rights, self._reach(group.rights.view))
        self._groups[user_id] = group
        return group

    def drop(self, group: ViewGroup) -> None:
        """A group without connections left."""
        if self._groups.get(group.user_id) is group:
            del self._groups[group.user_id]
            self._release(group, group.rights.view)

    def _hold(self, group: ViewGroup, ids: Iterable[str]) -> None:
        for i in ids:
            self._viewers.setdefault(i, set()).add(group)

    def _release(self, group: ViewGroup, ids: Iterable[str]) -> None:
        for i in ids:
            viewers = self._viewers.get(i)
            if viewers is not None:
                viewers.discard(group)
                if not viewers:
                    del self._viewers[i]

    def _visible(self, rights: Rights, candidates: Iterable[str]) -> set[str]:
        assert self._grants is not None
        view, known = rights.view, self._grants
        return {i for i in candidates if (g := known.get(i)) is not None and not view.isdisjoint(g)}

    # -- index -------------------------------------------------------------------------------

    def _ensure_index(self) -> None:
        if self._grants is not None:
            return
        get = self.store.get
        memo: dict[str, Grants] = {}
        known: dict[str, Grants] = {}
        for obj in self.store.all().values():
            known[obj["id"]], links = grants_and_links(obj, get, memo)
            self._link(obj["id"], links)
        self._grants = known

    def _link(self, obj_id: str, new: tuple[str, ...]) -> None:
        old = self._links.get(obj_id, ())
        if old == new:
            return
        for i in old:
            dependents = self._dependents.get(i)
            if dependents is not None:
                dependents.discard(obj_id)
                if not dependents:
                    del self._dependents[i]
        for i in new:
            self._dependents.setdefault(i, set()).add(obj_id)
        if new:
            self._links[obj_id] = new
        else:
            self._links.pop(obj_id, None)

    def _reach(self, roots: Iterable[str]) -> set[str]:
        """`roots` and every id whose grants may include one of them (a superset)."""
        seen: set[str] = set()
        stack = list(roots)
        dependents = self._dependents
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(dependents.get(i, ()))
        return seen

    # -- updates -----------------------------------------------------------------------------

    def apply(self, changes: ChangeSet) -> Deltas:
        """One store flush: the index follows it; what enters and leaves each group's view."""
        known = self._grants
        if known is None:
            return {}
        get = self.store.get
        memo: dict[str, Grants] = {}
        deltas: Deltas = {}
        changed = changes.enter
        work = [*changed, *changes.exit]
        seen: set[str] = set()
        while work:
            obj_id = work.pop()
            if obj_id in seen:
                continue
            seen.add(obj_id)
            obj = get(obj_id)
            old = known.get(obj_id)
            new: Grants | None
            if obj is None:
                new = None
                known.pop(obj_id, None)
                self._link(obj_id, ())
            else:
                new, links = grants_and_links(obj, get, memo)
                known[obj_id] = new
                self._link(obj_id, links)
            if new != old:
                work.extend(self._dependents.get(obj_id, ()))
            if self._groups:
                self._route(obj_id, old, new, obj_id in changed, deltas)
        return deltas

    def _viewers_of(self, ids: Grants | None) -> Collection[ViewGroup]:
        if not ids:
            return _NO_GROUPS
        viewers = self._viewers
        found: set[ViewGroup] | None = None
        for i in ids:
            groups = viewers.get(i)
            if groups:
                found = set(groups) if found is None else found | groups
        return found or _NO_GROUPS

    def _route(
        self, obj_id: str, old: Grants | None, new: Grants | None, changed: bool, deltas: Deltas
    ) -> None:
        now = self._viewers_of(new)
        for group in now:
            if changed or obj_id not in group.visible:
                group.visible.add(obj_id)
                _delta(deltas, group).enter.append(obj_id)
        for group in self._viewers_of(old):
            if group not in now and obj_id in group.visible:
                group.visible.discard(obj_id)
                _delta(deltas, group).exit.append(obj_id)

    def refresh(self, user_ids: Iterable[str]) -> Deltas:
        """These users' rights changed: their groups' views follow."""
        deltas: Deltas = {}
        for user_id in user_ids:
            group = self._groups.get(user_id)
            if group is None:
                continue
            old, new = group.rights, self.acl.rights_of(user_id)
            group.rights = new
            if new.view == old.view:
                continue
            gained, lost = new.view - old.view, old.view - new.view
            self._release(group, lost)
            self._hold(group, gained)
            candidates = self._reach(gained | lost)
            now = self._visible(new, candidates)
            for obj_id in candidates:
                if obj_id in now and obj_id not in group.visible:
                    group.visible.add(obj_id)
                    _delta(deltas, group).enter.append(obj_id)
                elif obj_id not in now and obj_id in group.visible:
                    group.visible.discard(obj_id)
                    _delta(deltas, group).exit.append(obj_id)
        return deltas


def _delta(deltas: Deltas, group: ViewGroup) -> Delta:
    delta = deltas.get(group)
    if delta is None:
        delta = deltas[group] = Delta()
    return delta
