"""Shared helpers for the xen client tests (real simulator, real sockets)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from xen.config import PoolConfig
from xen.pool import MIGRATION_CLASSES, ConnectionOptions
from xen.store import ObjectStore
from xen.xo_shape import SIDE_CLASSES

# Fast reconnects and short long-polls so that every scenario settles in a few seconds.
FAST = ConnectionOptions(
    workers=3,
    event_timeout=1.0,
    socket_margin=5.0,
    call_timeout=30.0,
    backoff_initial=0.05,
    backoff_max=0.4,
    auth_retry_interval=0.3,
    auth_max_attempts=3,
    call_wait=5.0,
    cancel_grace=3.0,
    close_timeout=2.0,
)

PUBLISHED_CLASSES = tuple(c for c in MIGRATION_CLASSES if c not in SIDE_CLASSES)


def pool_manifest(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in manifest["pools"] if p["name"] == name)


def master_name(pool: dict[str, Any]) -> str:
    """The manifest gives the master as a URL; the name of the host behind it."""
    address = pool["master"].split("//", 1)[1].rsplit(":", 1)[0]
    return next(h["name"] for h in pool["hosts"] if h["address"] == address)


def host_url(manifest: dict[str, Any], pool: dict[str, Any], host_name: str | None = None) -> str:
    if host_name is None:
        return pool["master"]
    host = next(h for h in pool["hosts"] if h["name"] == host_name)
    return f"http://{host['address']}:{manifest['port']}/"


def pool_config(
    manifest: dict[str, Any],
    name: str,
    *,
    host: str | None = None,
    password: str | None = None,
) -> PoolConfig:
    pool = pool_manifest(manifest, name)
    return PoolConfig(
        id=str(uuid.uuid4()),
        url=host_url(manifest, pool, host),
        username=pool["username"],
        password=pool["password"] if password is None else password,
        label=name,
    )


def sim_stats(manifest: dict[str, Any], pool_name: str) -> dict[str, int]:
    """Per-method counters over HTTP, as an operator would read them."""
    url = host_url(manifest, pool_manifest(manifest, pool_name)).rstrip("/") + "/sim/stats"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


async def eventually(
    predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def pool_objects(store: ObjectStore, pool_uuid: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in store if o.get("$pool") == pool_uuid}


def _seconds(value: datetime) -> int | None:
    seconds = int(value.timestamp())
    return seconds or None


def expected_objects(db: Any) -> dict[str, dict[str, Any]]:
    """What the cache must hold for one simulated pool, derived from the simulator's own
    database and schema (independently of xen.xo_shape): id, type, links as uuids, ints as
    ints, datetimes as epoch seconds, plus the xo-server extras the API relies on."""
    uuid_of: dict[str, str] = {}
    for cls in MIGRATION_CLASSES:
        for ref, rec in db.iter_records(cls):
            uuid_of[ref] = rec["uuid"]
    pool_uuid = next(rec["uuid"] for _, rec in db.iter_records("pool"))
    out: dict[str, dict[str, Any]] = {}
    for cls in PUBLISHED_CLASSES:
        spec = db.schema.cls(cls)
        for ref, rec in db.iter_records(cls):
            exp: dict[str, Any] = {
                "id": rec["uuid"],
                "$pool": pool_uuid,
                "$poolId": pool_uuid,
                "_xapiRef": ref,
                "type": cls,
            }
            for name, value in rec.items():
                fspec = spec.fields[name]
                key = f"{cls}_type" if name == "type" else name
                if fspec.type.endswith(" ref"):
                    exp[f"${name}"] = uuid_of.get(value)
                elif fspec.type.endswith(" ref set"):
                    exp[f"${name}"] = [uuid_of[r] for r in value if r in uuid_of]
                elif isinstance(value, datetime):
                    exp[key] = _seconds(value)
                elif fspec.kind == "map":
                    exp[key] = {uuid_of.get(k, k): v for k, v in value.items()}
                elif fspec.kind in ("string", "int", "bool", "float", "enum") or (
                    fspec.kind == "set" and not fspec.type.endswith(" ref set")
                ):
                    exp[key] = value
            if cls == "VM":
                running = rec["power_state"] in ("Running", "Paused")
                exp["$container"] = (
                    uuid_of[rec["resident_on"]] if running else local_sr_host(db, rec) or pool_uuid
                )
                exp["type"] = (
                    "VM-controller"
                    if rec["is_control_domain"]
                    else "VM-snapshot"
                    if rec["is_a_snapshot"]
                    else "VM-template"
                    if rec["is_a_template"]
                    else "VM"
                )
            elif cls == "VDI":
                exp["type"] = "VDI-snapshot" if rec["is_a_snapshot"] else "VDI"
            elif cls == "SR" and not rec["shared"] and rec["PBDs"]:
                exp["$container"] = uuid_of[db.get("PBD", rec["PBDs"][0])["host"]]
            elif cls == "host":
                live = db.get("host_metrics", rec["metrics"])["live"]
                exp["power_state"] = "Running" if live else "Halted"
            out[exp["id"]] = exp
    return out


def local_sr_host(db: Any, vm: dict[str, Any]) -> str | None:
    """Uuid of the host whose local SR holds a disk of a halted VM (not a template or a
    snapshot): where it can start, its xo-server `$container`."""
    if vm["is_a_template"] or vm["is_a_snapshot"]:
        return None
    for vbd in vm["VBDs"]:
        vdi = db.get("VBD", vbd)["VDI"]
        if not db.exists("VDI", vdi):
            continue
        sr = db.get("SR", db.get("VDI", vdi)["SR"])
        if not sr["shared"] and sr["PBDs"]:
            return db.get("host", db.get("PBD", sr["PBDs"][0])["host"])["uuid"]
    return None


def mismatches(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list:
    """(id, field, expected, actual) for every expected field that differs; missing/extra ids."""
    problems: list[tuple[str, str, Any, Any]] = []
    for obj_id, exp in expected.items():
        got = actual.get(obj_id)
        if got is None:
            problems.append((obj_id, "<missing>", exp.get("type"), None))
            continue
        for key, value in exp.items():
            if got.get(key, "<absent>") != value:
                problems.append((obj_id, key, value, got.get(key, "<absent>")))
    for obj_id in actual.keys() - expected.keys():
        problems.append((obj_id, "<unexpected>", None, actual[obj_id].get("type")))
    return problems
