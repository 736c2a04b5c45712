"""The objects a command needs (fetched with `xo.getAllObjects`, by type) and name resolution:
VMs, hosts, SRs, networks, disks and network cards by uuid, name or unique prefix.

Resolution order: the exact id/uuid; the exact name (then the same name ignoring case); a
unique prefix of a name; a unique prefix of a uuid. Names come before uuids so that `a` means
the hosts named a1, a2, a3 whatever random uuids the lab drew. Several matches at one step is an
ambiguity, none at every step a not-found: both are usage errors (exit 2) that list the
candidates or the closest names.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Iterable
from typing import Any

from client.connection import Connection
from client.errors import UsageError

XoObject = dict[str, Any]

MAX_LISTED = 10  # candidates listed in an ambiguity error


class Inventory:
    def __init__(self, objects: Iterable[XoObject]) -> None:
        self.by_id: dict[str, XoObject] = {}
        self.by_type: dict[str, list[XoObject]] = {}
        for obj in objects:
            self.by_id[obj["id"]] = obj
            self.by_type.setdefault(obj.get("type", ""), []).append(obj)
        for objs in self.by_type.values():
            objs.sort(key=lambda o: (str(o.get("name_label", "")).lower(), o["id"]))

    @classmethod
    async def load(cls, conn: Connection, types: Iterable[str]) -> Inventory:
        answers = await asyncio.gather(
            *(conn.call("xo.getAllObjects", {"filter": {"type": t}}) for t in types)
        )
        return cls(obj for answer in answers for obj in (answer or {}).values())

    def of_type(self, xo_type: str) -> list[XoObject]:
        return self.by_type.get(xo_type, [])

    def get(self, obj_id: Any) -> XoObject | None:
        return self.by_id.get(obj_id) if isinstance(obj_id, str) else None

    def name(self, obj_id: Any, default: str = "-") -> str:
        obj = self.get(obj_id)
        if obj is None:
            return str(obj_id) if obj_id else default
        return str(obj.get("name_label") or obj.get("device") or obj_id)

    def host_of(self, vm: XoObject) -> XoObject | None:
        """The host a VM runs on: its `$container` when that is a host (else it is its pool)."""
        container = self.get(vm.get("$container"))
        return container if container is not None and container.get("type") == "host" else None

    def describe(self, obj: XoObject) -> str:
        """One line that tells candidates apart: name, uuid, and where it is."""
        where = [self.name(obj.get("$pool"))] if obj.get("$pool") else []
        host = self.host_of(obj) if obj.get("type") == "VM" else None
        if host is not None:
            where.append(f"on {host.get('name_label')}")
        if obj.get("type") == "SR" and obj.get("SR_type"):
            where.append(str(obj["SR_type"]))
        label = obj.get("name_label") or obj.get("device") or ""
        return f"{label}  {obj['id']}" + (f"  ({', '.join(where)})" if where else "")

    # -- resolution ----------------------------------------------------------------------

    def resolve(self, what: str, text: str, candidates: list[XoObject] | None = None) -> XoObject:
        """The one object of type `what` (or of `candidates`) that `text` names."""
        pool = self.of_type(what) if candidates is None else candidates
        return resolve_among(what, text, pool, self.describe)


def _names(obj: XoObject) -> list[str]:
    return [str(n) for n in (obj.get("name_label"), obj.get("device"), obj.get("MAC")) if n]


def resolve_among(
    what: str, text: str, candidates: list[XoObject], describe: Any = None
) -> XoObject:
    describe = describe or (lambda o: f"{o.get('name_label', '')}  {o['id']}")
    for obj in candidates:
        if text in (obj["id"], obj.get("uuid")):
            return obj
    for match in (
        lambda o: text in _names(o),
        lambda o: text.lower() in (n.lower() for n in _names(o)),
        lambda o: any(n.lower().startswith(text.lower()) for n in _names(o)),
        lambda o: o["id"].startswith(text.lower()),
    ):
        found = [o for o in candidates if match(o)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            listed = "\n".join(f"  {describe(o)}" for o in found[:MAX_LISTED])
            more = f"\n  ... and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
            raise UsageError(
                f"{text!r} matches {len(found)} {what}s:\n{listed}{more}",
                hint="give the full name, or enough of the uuid to tell them apart",
            )
    names = sorted({n for o in candidates for n in _names(o)})
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}?" if close else f"xo-migrate ls lists the {what}s"
    raise UsageError(f"no {what} named {text!r} or with a uuid starting so", hint=hint)
