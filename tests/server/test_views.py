"""The container rules (server/acl_rules.py) and what each non-admin may view as the collection
and the rights change (server/views.py), on a small estate in xo-server's object shapes, with
the real object store and ACLs stored in SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from server.acls import AccessControl
from server.credentials import CredentialCipher
from server.limits import InputLimits
from server.storage import Storage
from server.storage.records import User
from server.storage.redis import RedisStorage
from server.storage.sqlite import SqliteStorage
from server.views import Deltas, Views
from tests.storage import database_url
from xen.store import ObjectStore

XoObject = dict[str, Any]


def estate() -> list[XoObject]:
    """Pool P (hosts h1, h2) and pool Q (host h3), in xo-server's shapes (links only)."""

    def o(obj_id: str, obj_type: str, **links: Any) -> XoObject:
        return {"id": obj_id, "type": obj_type, **links}

    return [
        o("P", "pool", **{"$pool": "P"}),
        o("Q", "pool", **{"$pool": "Q"}),
        o("h1", "host", **{"$pool": "P"}),
        o("h2", "host", **{"$pool": "P"}),
        o("h3", "host", **{"$pool": "Q"}),
        o("vm", "VM", **{"$container": "h1", "$pool": "P"}),
        o("halted", "VM", **{"$container": "P", "$pool": "P"}),
        o("vmQ", "VM", **{"$container": "h3", "$pool": "Q"}),
        o("tpl", "VM-template", **{"$container": "P", "$pool": "P"}),
        o("snap", "VM-snapshot", **{"$snapshot_of": "vm", "$pool": "P"}),
        o("shared", "SR", **{"$container": "P", "$pool": "P"}),
        o("local1", "SR", **{"$container": "h1", "$pool": "P"}),
        o("vdi", "VDI", **{"$SR": "shared", "$VBDs": ["vbd"], "$pool": "P"}),
        o("vdi-snap", "VDI-snapshot", **{"$snapshot_of": "vdi", "$SR": "shared"}),
        o("vbd", "VBD", VDI="vdi", VM="vm"),
        o("net", "network", **{"$pool": "P"}),
        o("vif", "VIF", **{"$network": "net", "$VM": "vm"}),
        o("pif", "PIF", **{"$host": "h1", "$network": "net"}),
        o("pbd", "PBD", host="h1", SR="shared"),
        o("task", "task", **{"$host": "h1"}),
        o("msg", "message", **{"$object": "vm"}),
        o("mig", "migration", vm="vmQ", user="u-owner"),
        o("batch", "migrationBatch", user="u-owner"),
    ]


class World:
    def __init__(self, tmp_path: Path) -> None:
        cipher = CredentialCipher(b"k" * 32)
        url = database_url(tmp_path)  # the store of the run: SQLite or Redis
        self.db: Storage = (
            RedisStorage(url, cipher) if url else SqliteStorage(tmp_path / "db.sqlite", cipher)
        )
        self.acl = AccessControl(self.db, InputLimits())
        self.store = ObjectStore()
        self.views = Views(self.store, self.acl)
        self.deltas: list[Deltas] = []
        self.store.subscribe(lambda changes: self.deltas.append(self.views.apply(changes)))
        self.users: dict[str, User] = {}

    async def user(self, name: str) -> User:
        user = User(name, f"{name}@x.net", "-", "none")
        await self.db.add_user(user)
        self.users[name] = user
        return user

    def load(self, objects: list[XoObject]) -> None:
        for obj in objects:
            self.store.set(obj)
        self.store.flush()

    def visible(self, name: str) -> set[str]:
        ids = self.views.visible_ids(self.users[name])
        assert ids is not None
        return set(ids)

    def moved(self, obj_id: str, **fields: Any) -> dict[str, tuple[list[str], list[str]]]:
        """Change an object, flush: user id -> (entered, left) ids, sorted."""
        self.store.set({**(self.store.get(obj_id) or {}), **fields})
        self.store.flush()
        return self.last()

    async def acl_changes(self, change: Awaitable[Any]) -> set[str]:
        """Run an ACL change; the users it concerns (as AccessControl tells its listeners)."""
        seen: set[str] = set()
        unsubscribe = self.acl.subscribe(seen.update)
        try:
            await change
        finally:
            unsubscribe()
        return seen

    def last(self) -> dict[str, tuple[list[str], list[str]]]:
        deltas = self.deltas.pop() if self.deltas else {}
        return {g.user_id: (sorted(d.enter), sorted(d.exit)) for g, d in deltas.items()}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.db.open()
    await w.acl.load()
    yield w
    await w.db.close()


UNDER_H1 = {"h1", "vm", "snap", "local1", "vdi", "vdi-snap", "vbd", "vif", "pif", "pbd", "task"}


async def test_rights_hold_through_containers_as_xo_server_resolves_them(world: World) -> None:
    world.load(estate())
    for name in ("host-viewer", "pool-viewer", "vm-viewer", "task-viewer", "u-owner"):
        await world.user(name)
    await world.acl.add("host-viewer", "h1", "viewer")
    await world.acl.add("pool-viewer", "P", "viewer")
    await world.acl.add("vm-viewer", "vmQ", "viewer")
    await world.acl.add("task-viewer", "task", "admin")  # a task takes no right of its own
    # A right on h1: the host, what runs on it and its VMs' disks, cards, snapshots,
    # messages; its local SR, PIF, PBD and tasks. Not the pool, the other host, the halted
    # VM, the shared SR or the network (a VIF is seen through its VM).
    assert world.visible("host-viewer") == UNDER_H1 | {"msg"}
    # A right on the pool: everything in it, nothing of pool Q.
    pool_p = {o["id"] for o in estate() if o["id"] not in ("Q", "h3", "vmQ", "mig", "batch")}
    assert world.visible("pool-viewer") == pool_p
    # A right on a VM of Q: the VM and its migration (through its `vm`).
    assert world.visible("vm-viewer") == {"vmQ", "mig"}
    assert world.visible("task-viewer") == set()
    # Who started a migration or batch sees it, without any entry.
    assert world.visible("u-owner") == {"mig", "batch"}

    # Permissions beyond view: a role's, through the same containers.
    rights = world.acl.rights_of("pool-viewer")
    get = world.store.get
    assert rights.can(get("vdi"), "view", get) and not rights.can(get("vdi"), "operate", get)
    await world.acl.add("pool-viewer", "h2", "admin")
    rights = world.acl.rights_of("pool-viewer")
    assert rights.can(get("h2"), "administrate", get)
    assert not rights.can(get("vm"), "administrate", get)  # vm runs on h1


async def test_a_vm_leaving_the_host_leaves_the_view_with_what_depends_on_it(world: World) -> None:
    world.load(estate())
    await world.user("viewer")
    await world.user("operator-of-P")
    await world.acl.add("viewer", "h1", "viewer")
    await world.acl.add("operator-of-P", "P", "admin")
    for name in ("viewer", "operator-of-P"):
        world.views.group_for(name)

    # The VM moves to h2: it leaves the view of h1's viewer, with its snapshot, disk, VBD and
    # VIF (which did not change themselves) and its message; the operator of P sees it move.
    gone = {"vm", "snap", "vdi", "vdi-snap", "vbd", "vif", "msg"}
    assert world.moved("vm", **{"$container": "h2"}) == {
        "viewer": ([], sorted(gone)),
        "operator-of-P": (["vm"], []),
    }
    assert world.visible("viewer") == UNDER_H1 - gone
    # Back on h1: it enters again, everything with it.
    assert world.moved("vm", **{"$container": "h1"})["viewer"] == (sorted(gone), [])
    # A change of an object nobody can see is sent to nobody.
    assert world.moved("vmQ", name_label="x") == {}
    # Removed objects leave the view of those who saw them only.
    world.store.remove("task")
    world.store.flush()
    assert world.last() == {"viewer": ([], ["task"]), "operator-of-P": ([], ["task"])}


async def test_objects_arriving_in_any_order_and_rights_changing(world: World) -> None:
    objects = {o["id"]: o for o in estate()}
    await world.user("viewer")
    await world.acl.add("viewer", "P", "viewer")
    # The VM and its card before their host and pool (a pool's first sync): not visible
    # until the containers that grant it arrive.
    world.load([objects["vm"], objects["vif"]])
    group = world.views.group_for("viewer")
    assert group.visible == set()
    world.load([objects["h1"]])
    assert world.last() == {}
    world.load([objects["P"]])
    assert world.last() == {"viewer": (["P", "h1", "vif", "vm"], [])}

    # Rights: a new entry brings its objects in, a removed one takes them out, at once.
    world.load([objects["Q"], objects["h3"], objects["vmQ"]])
    deltas = world.views.refresh(await world.acl_changes(world.acl.add("viewer", "h3", "viewer")))
    assert {g.user_id: sorted(d.enter) for g, d in deltas.items()} == {"viewer": ["h3", "vmQ"]}
    deltas = world.views.refresh(await world.acl_changes(world.acl.remove("viewer", "P", "viewer")))
    assert {g.user_id: sorted(d.exit) for g, d in deltas.items()} == {
        "viewer": ["P", "h1", "vif", "vm"]
    }
    assert group.visible == {"h3", "vmQ"}
    # Through a group: membership gives and takes the group's rights.
    team = await world.acl.create_group("team")
    await world.acl.add(team.id, "h1", "viewer")
    deltas = world.views.refresh(await world.acl_changes(world.acl.add_user(team.id, "viewer")))
    assert sorted(next(iter(deltas.values())).enter) == ["h1", "vif", "vm"]
    deltas = world.views.refresh(await world.acl_changes(world.acl.remove_user(team.id, "viewer")))
    assert sorted(next(iter(deltas.values())).exit) == ["h1", "vif", "vm"]
