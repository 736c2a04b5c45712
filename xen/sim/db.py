"""The simulated pool database: every XAPI object as a record driven by one schema.

One `Database` per simulated pool. Records are dicts of *native* Python values (int, float,
bool, str, datetime, list, dict); the wire codec decides how each is encoded (XML-RPC sends
ints as strings, JSON-RPC as numbers). Every create / modify / delete bumps one generation
counter, which is what `event.from` tokens count; a change log ordered by generation makes
"what changed since token T" cost O(changes), not O(objects).

Links between classes (VBD.VM <-> VM.VBDs ...) are kept consistent here, as XAPI does, and a
change to one side is also a `mod` of the other.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from xen.sim.ids import IdSource

NULL_REF = "OpaqueRef:NULL"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Classes that never appear in event.from (xapi.md 4.2).
NO_EVENTS = frozenset({"session", "user", "data_source", "sr_stat", "vdi_nbd_server_info"})

# One-to-many links maintained on both sides: (child class, ref field, parent class, set field).
RELATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("VBD", "VM", "VM", "VBDs"),
    ("VBD", "VDI", "VDI", "VBDs"),
    ("VIF", "VM", "VM", "VIFs"),
    ("VIF", "network", "network", "VIFs"),
    ("PIF", "host", "host", "PIFs"),
    ("PIF", "network", "network", "PIFs"),
    ("PBD", "host", "host", "PBDs"),
    ("PBD", "SR", "SR", "PBDs"),
    ("VDI", "SR", "SR", "VDIs"),
    ("VM", "resident_on", "host", "resident_VMs"),
    ("VM", "snapshot_of", "VM", "snapshots"),
    ("VDI", "snapshot_of", "VDI", "snapshots"),
    ("task", "subtask_of", "task", "subtasks"),
    ("VM", "appliance", "VM_appliance", "VMs"),
    ("VTPM", "VM", "VM", "VTPMs"),
    ("console", "VM", "VM", "consoles"),
    ("crashdump", "VM", "VM", "crash_dumps"),
    ("host_cpu", "host", "host", "host_CPUs"),
    ("Certificate", "host", "host", "certificates"),
)

MAX_TOMBSTONES = 50_000


def new_ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class XapiFailure(Exception):
    """A XAPI failure (raised anywhere in the simulator): `ErrorDescription = [code, *params]`."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(f"{code} {self.params}")


# -- schema ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str  # the datamodel's spelling, e.g. "int", "VM ref", "(string -> string) map"
    qualifier: str  # "RW", "RO/runtime", "RO/constructor"
    default: Any

    @property
    def kind(self) -> str:
        return type_kind(self.type)

    @property
    def ref_class(self) -> str | None:
        return self.type[: -len(" ref")] if self.type.endswith(" ref") else None


@dataclass(frozen=True, slots=True)
class MessageSpec:
    name: str
    params: tuple[tuple[str, str], ...]  # (type, name), session_id included when present
    result: str
    implicit: bool

    @property
    def takes_session(self) -> bool:
        return bool(self.params) and self.params[0][1] == "session_id"

    @property
    def args(self) -> tuple[tuple[str, str], ...]:
        """Params after the session."""
        return self.params[1:] if self.takes_session else self.params


@dataclass(slots=True)
class ClassSpec:
    name: str
    fields: dict[str, FieldSpec]
    messages: dict[str, MessageSpec]


def type_kind(t: str) -> str:
    if t.endswith(" ref"):
        return "ref"
    if t.endswith(" set"):
        return "set"
    if t.endswith(" map"):
        return "map"
    if t.endswith(" record"):
        return "record"
    if t.startswith("enum "):
        return "enum"
    return t  # string, int, float, bool, datetime


class Schema:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.enums: dict[str, list[str]] = {}
        for cls in raw["classes"].values():
            self.enums.update(cls["enums"])
        self.classes: dict[str, ClassSpec] = {}
        for name, cls in raw["classes"].items():
            fields = {
                f[0]: FieldSpec(f[0], f[1], f[2], self._parse_default(f[1], f[3]))
                for f in cls["fields"]
            }
            messages = {
                m: MessageSpec(
                    m, tuple((p[0], p[1]) for p in spec["params"]), spec["result"], spec["implicit"]
                )
                for m, spec in cls["messages"].items()
            }
            self.classes[name] = ClassSpec(name, fields, messages)
        self._by_lower = {name.lower(): name for name in self.classes}

    def cls(self, name: str) -> ClassSpec:
        return self.classes[name]

    def canonical(self, name: str) -> str | None:
        """Class name as XAPI spells it, from any case (event classes are lower-case)."""
        return self._by_lower.get(name.lower())

    def _parse_default(self, ftype: str, raw: str | None) -> Any:
        kind = type_kind(ftype)
        if raw is not None:
            try:
                return self._parse_literal(kind, raw)
            except ValueError:
                pass
        return {
            "string": "",
            "int": 0,
            "float": 0.0,
            "bool": False,
            "datetime": EPOCH,
            "ref": NULL_REF,
            "set": [],
            "map": {},
            "record": {},
        }.get(kind, self._enum_first(ftype))

    def _enum_first(self, ftype: str) -> str:
        values = self.enums.get(ftype.removeprefix("enum ").split(" ")[0], [])
        return values[0] if values else ""

    @staticmethod
    def _parse_literal(kind: str, raw: str) -> Any:
        if kind == "string":
            if raw.startswith('"') and raw.endswith('"'):
                return raw[1:-1]
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return {"true": True, "false": False}[raw]
        if kind == "datetime":
            return datetime.strptime(raw, "%Y%m%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if kind == "ref":
            if raw in ("Null", "OpaqueRef:NULL"):
                return NULL_REF
            raise ValueError(raw)
        if kind in ("set", "map"):
            if raw == "{}":
                return [] if kind == "set" else {}
            raise ValueError(raw)
        if kind == "enum":
            return raw
        raise ValueError(raw)


@cache
def default_schema() -> Schema:
    return Schema(json.loads(Path(__file__).with_name("schema.json").read_text()))


# -- database -------------------------------------------------------------------------------


def _copy_value(value: Any) -> Any:
    """deepcopy for record values (dicts, lists, immutable scalars), several times faster."""
    if type(value) is dict:
        return {k: _copy_value(v) if type(v) in (dict, list) else v for k, v in value.items()}
    if type(value) is list:
        return [_copy_value(v) if type(v) in (dict, list) else v for v in value]
    if isinstance(value, str | int | float | datetime | None):
        return value
    return copy.deepcopy(value)


@dataclass(slots=True)
class Event:
    id: int  # generation of the change
    cls: str  # canonical class name
    operation: str  # "add" | "mod" | "del"
    ref: str
    snapshot: dict[str, Any] | None  # absent (None) on "del"


@dataclass(slots=True)
class _Meta:
    cls: str
    created: int
    changed: int
    deleted: int = 0  # 0 while alive


@dataclass
class Database:
    schema: Schema = field(default_factory=default_schema)
    generation: int = 0
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _meta: dict[str, _Meta] = field(default_factory=dict)  # ref -> meta, tombstones included
    # ref -> generation of its last change, in generation order (dicts keep insertion order;
    # a changed ref is popped and re-inserted at the end).
    _changelog: dict[str, int] = field(default_factory=dict)
    _tombstones: int = 0
    _uuid_index: dict[tuple[str, str], str] = field(default_factory=dict)
    _changed: asyncio.Event | None = None
    # uuids and refs of new records: random, or the lab seed's stream (xen/sim/ids.py).
    ids: IdSource = field(default_factory=IdSource)

    def __post_init__(self) -> None:
        self._relations_by_child: dict[tuple[str, str], tuple[str, str]] = {
            (c, f): (p, s) for c, f, p, s in RELATIONS
        }
        self._relations_by_class: dict[str, list[tuple[str, str, str]]] = {}
        for c, f, p, s in RELATIONS:
            self._relations_by_class.setdefault(c, []).append((f, p, s))

    # -- reads ---------------------------------------------------------------------------

    def table(self, cls: str) -> dict[str, dict[str, Any]]:
        return self.tables.setdefault(cls, {})

    def exists(self, cls: str, ref: str) -> bool:
        return ref in self.tables.get(cls, {})

    def get(self, cls: str, ref: str) -> dict[str, Any]:
        """The live record (do not mutate it; use the write methods)."""
        try:
            return self.tables[cls][ref]
        except KeyError:
            raise XapiFailure("HANDLE_INVALID", cls, ref) from None

    def record(self, cls: str, ref: str) -> dict[str, Any]:
        """A deep copy of the record, as get_record and event snapshots return it."""
        return _copy_value(self.get(cls, ref))

    def by_uuid(self, cls: str, uuid: str) -> str:
        try:
            return self._uuid_index[(cls, uuid)]
        except KeyError:
            raise XapiFailure("UUID_INVALID", cls, uuid) from None

    def find(self, cls: str, **match: Any) -> list[str]:
        return [
            ref
            for ref, rec in self.tables.get(cls, {}).items()
            if all(rec.get(k) == v for k, v in match.items())
        ]

    def find_one(self, cls: str, **match: Any) -> str | None:
        refs = self.find(cls, **match)
        return refs[0] if refs else None

    def all_refs(self, cls: str) -> list[str]:
        return list(self.tables.get(cls, {}))

    # -- writes --------------------------------------------------------------------------

    def create(self, cls: str, ref: str | None = None, /, **values: Any) -> str:
        # `cls` and `ref` are positional-only so that records with a field of that name
        # (message.cls) can be written like any other field.
        spec = self.schema.cls(cls)
        unknown = set(values) - set(spec.fields)
        if unknown:
            raise ValueError(f"unknown {cls} fields: {sorted(unknown)}")
        ref = ref or self.ids.ref()
        # Defaults are immutable scalars or flat, usually empty, containers: a shallow copy
        # of those is enough and far cheaper than deepcopy (10,000-VM labs).
        rec: dict[str, Any] = {
            name: f.default.copy() if isinstance(f.default, list | dict) else f.default
            for name, f in spec.fields.items()
        }
        rec.update(values)
        if "uuid" in spec.fields and not rec.get("uuid"):
            rec["uuid"] = self.ids.uuid()
        self.table(cls)[ref] = rec
        if "uuid" in rec:
            self._uuid_index[(cls, rec["uuid"])] = ref
        gen = self._bump()
        self._meta[ref] = _Meta(cls, gen, gen)
        self._log(ref, gen)
        for fname, parent, set_field in self._relations_by_class.get(cls, ()):
            target = rec.get(fname, NULL_REF)
            if target != NULL_REF:
                self._link(parent, target, set_field, ref, fresh=True)
        self._notify()
        return ref

    def update(self, cls: str, ref: str, /, **values: Any) -> None:
        rec = self.get(cls, ref)
        spec = self.schema.cls(cls)
        for name, value in values.items():
            if name not in spec.fields:
                raise ValueError(f"unknown {cls} field: {name}")
            old = rec.get(name)
            if old == value:
                continue
            relation = self._relations_by_child.get((cls, name))
            if relation is not None:
                parent, set_field = relation
                if old and old != NULL_REF:
                    self._unlink(parent, old, set_field, ref)
                if value and value != NULL_REF:
                    self._link(parent, value, set_field, ref)
            if name == "uuid":
                if old is not None:
                    self._uuid_index.pop((cls, old), None)
                self._uuid_index[(cls, value)] = ref
            rec[name] = value
        self._touch(ref)

    def map_set(self, cls: str, ref: str, name: str, key: str, value: Any) -> None:
        current = dict(self.get(cls, ref)[name])
        current[key] = value
        self.update(cls, ref, **{name: current})

    def map_remove(self, cls: str, ref: str, name: str, key: str) -> None:
        current = dict(self.get(cls, ref)[name])
        if key in current:
            del current[key]
            self.update(cls, ref, **{name: current})

    def set_add(self, cls: str, ref: str, name: str, value: Any) -> None:
        current = list(self.get(cls, ref)[name])
        if value not in current:
            self.update(cls, ref, **{name: [*current, value]})

    def set_remove(self, cls: str, ref: str, name: str, value: Any) -> None:
        current = list(self.get(cls, ref)[name])
        if value in current:
            current.remove(value)
            self.update(cls, ref, **{name: current})

    def delete(self, cls: str, ref: str) -> None:
        rec = self.get(cls, ref)
        for fname, parent, set_field in self._relations_by_class.get(cls, ()):
            target = rec.get(fname, NULL_REF)
            if target != NULL_REF:
                self._unlink(parent, target, set_field, ref)
        del self.tables[cls][ref]
        if "uuid" in rec:
            self._uuid_index.pop((cls, rec["uuid"]), None)
        gen = self._bump()
        meta = self._meta[ref]
        meta.deleted = gen
        meta.changed = gen
        self._log(ref, gen)
        self._tombstones += 1
        if self._tombstones > MAX_TOMBSTONES:
            self._purge_tombstones()
        self._notify()

    def _link(
        self, parent: str, parent_ref: str, set_field: str, child_ref: str, fresh: bool = False
    ) -> None:
        # `fresh`: the child was just created, so it cannot be in the set yet (skipping the
        # O(n) membership test keeps building a 10,000-VM lab linear).
        prec = self.tables.get(parent, {}).get(parent_ref)
        if prec is not None and (fresh or child_ref not in prec[set_field]):
            prec[set_field] = [*prec[set_field], child_ref]
            self._touch(parent_ref)

    def _unlink(self, parent: str, parent_ref: str, set_field: str, child_ref: str) -> None:
        prec = self.tables.get(parent, {}).get(parent_ref)
        if prec is not None and child_ref in prec[set_field]:
            prec[set_field] = [r for r in prec[set_field] if r != child_ref]
            self._touch(parent_ref)

    def _touch(self, ref: str) -> None:
        gen = self._bump()
        self._meta[ref].changed = gen
        self._log(ref, gen)
        self._notify()

    def _bump(self) -> int:
        self.generation += 1
        return self.generation

    def _log(self, ref: str, gen: int) -> None:
        self._changelog.pop(ref, None)
        self._changelog[ref] = gen

    def _purge_tombstones(self) -> None:
        # Oldest first: the change log is in generation order.
        for ref in list(self._changelog):
            if self._tombstones <= MAX_TOMBSTONES // 2:
                break
            meta = self._meta[ref]
            if meta.deleted:
                del self._meta[ref]
                del self._changelog[ref]
                self._tombstones -= 1

    # -- events --------------------------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def wake_waiters(self) -> None:
        """Release every wait_for_change now (shutdown), without a change."""
        self._notify()

    async def wait_for_change(self, after: int, timeout: float) -> bool:
        """Block until the generation passes `after` or the timeout; True if it did."""
        if self.generation > after:
            return True
        if self._changed is None:
            self._changed = asyncio.Event()
        event = self._changed
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return self.generation > after
        return True

    def events_since(
        self,
        since: int,
        classes: set[str] | None,
        refs: set[str] | None = None,
        *,
        copy_snapshots: bool = True,
    ) -> list[Event]:
        """Coalesced events after generation `since`: adds, then mods, then dels.

        `classes` is a set of canonical class names (None = every class with events);
        `refs` additionally admits single objects (the "class/ref" subscriptions).
        `copy_snapshots=False` hands out the live records (only for a caller that encodes
        them before yielding to the event loop: event.from on a 10,000-VM lab).
        """
        snap = self.record if copy_snapshots else self.get
        adds: list[Event] = []
        mods: list[Event] = []
        dels: list[Event] = []
        for ref in reversed(self._changelog):
            gen = self._changelog[ref]
            if gen <= since:
                break
            meta = self._meta[ref]
            wanted = (classes is None and meta.cls.lower() not in NO_EVENTS) or (
                classes is not None and meta.cls in classes
            )
            if not wanted and not (refs and ref in refs):
                continue
            if meta.deleted:
                if meta.created <= since:
                    dels.append(Event(gen, meta.cls, "del", ref, None))
            elif meta.created > since:
                adds.append(Event(gen, meta.cls, "add", ref, snap(meta.cls, ref)))
            else:
                mods.append(Event(gen, meta.cls, "mod", ref, snap(meta.cls, ref)))
        # Walked newest first; emit oldest first inside each group.
        adds.reverse()
        mods.reverse()
        dels.reverse()
        return adds + mods + dels

    def valid_ref_counts(self) -> dict[str, int]:
        return {
            name.lower(): len(self.tables.get(name, {}))
            for name in self.schema.classes
            if name.lower() not in NO_EVENTS
        }

    def iter_records(self, cls: str) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(list(self.tables.get(cls, {}).items()))

    def bulk_delete(self, cls: str, refs: Iterable[str]) -> None:
        for ref in list(refs):
            if self.exists(cls, ref):
                self.delete(cls, ref)
