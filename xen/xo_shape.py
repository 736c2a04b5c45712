"""XAPI record -> xo-server object (xo-server-api.md 4.2, 4.3).

Generic first, so that every class XAPI sends comes out usable without a converter of its
own; per-type extras then add the names xo-server clients know:

- `id` = uuid (the ref when a class has no uuid), `type` = XAPI class name (VM variants
  `VM-template` / `VM-snapshot` / `VM-controller`, VDI variants, `host_patch` -> `patch`),
  `$pool` / `$poolId` = pool uuid, `_xapiRef` = the opaque ref;
- every field is copied, except that ints (sent as strings) become ints, datetimes become
  epoch seconds (epoch 0 -> None), and refs become XO ids: a ref field `f` is published as
  `$f` (`$VBDs`, `$SR`, `$host` ...), ref keys/values inside maps are translated in place
  (`VM.current_operations` keys become task uuids); a field named `type` becomes `<class>_type`
  because `type` is taken;
- extras per class (`$container`, `VIFs`, task `created`/`finished`/`allowedOperations`, ...);
- side records (metrics) are folded into the object that links them (a VM's guest metrics
  give its `addresses`, `mainIpAddress` and `PV_drivers*`), never published on their own.

Links go through a `Linker`, which the cache implements: it resolves refs to ids and records
which refs could not be resolved yet (and which other objects were read), so that the cache
can convert the object again when they arrive or change.
"""

from __future__ import annotations

import re
import sys
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from xen.wire import NULL_REF, REF_PREFIX, datetime_to_seconds
from xen.xapi_schema import CLASS_NAMES, INT_FIELDS, REF_FIELDS, REF_SET_FIELDS

XoObject = dict[str, Any]

_CANONICAL = {name.lower(): name for name in CLASS_NAMES}

# Classes kept by the cache only as inputs of other objects, never published on their own
# (xo-server folds them into their owner too: host power_state comes from host_metrics).
SIDE_CLASSES = frozenset({"host_metrics", "VM_metrics", "VM_guest_metrics"})

_NONE: frozenset[str] = frozenset()
_NO_REFS: dict[str, str] = {}


def canonical_class(name: str) -> str:
    return _CANONICAL.get(name.lower(), name)


class Linker(Protocol):
    """What a conversion may ask the cache for."""

    pool_id: str

    def id_of(self, ref: str, target: str | None = None) -> str | None:
        """XO id of a ref of this pool; None for the null ref or a ref not known (yet).
        `target` is the class the ref points to, when the datamodel says."""
        ...

    def read(self, ref: str) -> XoObject | None:
        """Another object (XO shape, or raw record for side classes); marks a dependency."""
        ...

    def read_linked(self, obj_id: str | None) -> XoObject | None:
        """Another object of this pool by XO id (a link of an object read); marks a
        dependency. None for one not converted yet (the cache converts the object read,
        then its readers, again once it is)."""
        ...

    def side(self, ref: str) -> dict[str, Any] | None:
        """A side record of a FOLDS class, as its `slim` keeps it. No dependency: the cache
        folds it again into the object (FOLDS `fold`) when it changes."""
        ...


def xo_type(cls: str, record: dict[str, Any]) -> str:
    if cls == "VM":
        if record.get("is_control_domain"):
            return "VM-controller"
        if record.get("is_a_snapshot"):
            return "VM-snapshot"
        if record.get("is_a_template"):
            return "VM-template"
        return "VM"
    if cls == "VDI":
        if record.get("is_a_snapshot"):
            return "VDI-snapshot"
        if record.get("managed") is False:
            return "VDI-unmanaged"
        return "VDI"
    if cls == "host_patch":
        return "patch"
    return cls


def to_xo(cls: str, ref: str, record: dict[str, Any], linker: Linker) -> XoObject:
    """Convert one XAPI record (as received over XML-RPC) of class `cls`."""
    obj_id = record.get("uuid") or ref
    obj: XoObject = {
        "id": obj_id,
        "type": xo_type(cls, record),
        "$pool": linker.pool_id,
        "$poolId": linker.pool_id,
        "_xapiRef": ref,
    }
    ints = INT_FIELDS.get(cls, _NONE)
    ref_sets = REF_SET_FIELDS.get(cls, _NONE)
    targets = REF_FIELDS.get(cls, _NO_REFS)
    for name, value in record.items():
        # Interned: 10,000 VMs share one copy of each field name instead of one per record.
        key = f"{cls}_type" if name == "type" else sys.intern(name)
        if name in ints:
            obj[key] = _to_int(value)
        elif isinstance(value, str):
            if value.startswith(REF_PREFIX):
                obj[_link_key(name)] = linker.id_of(value, targets.get(name))
            else:
                obj[key] = value
        elif isinstance(value, list):
            if name in ref_sets or (
                value and isinstance(value[0], str) and value[0].startswith(REF_PREFIX)
            ):
                obj[_link_key(name)] = _ids(value, linker, targets.get(name))
            else:
                obj[key] = value
        elif isinstance(value, dict):
            obj[key] = _translate_map(value, linker)
        elif isinstance(value, xmlrpc.client.DateTime):
            obj[key] = datetime_to_seconds(value)
        else:
            obj[key] = value
    extra = _EXTRAS.get(cls)
    if extra is not None:
        extra(obj, record, linker)
    return obj


def _link_key(name: str) -> str:
    return sys.intern(f"${name}")


def _to_int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _ids(refs: list[str], linker: Linker, target: str | None) -> list[str]:
    out = []
    for ref in refs:
        obj_id = linker.id_of(ref, target)
        if obj_id is not None:
            out.append(obj_id)
    return out


def _translate_map(value: dict[str, Any], linker: Linker) -> dict[str, Any]:
    if not any(
        k.startswith(REF_PREFIX) or (isinstance(v, str) and v.startswith(REF_PREFIX))
        for k, v in value.items()
    ):
        return value
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k.startswith(REF_PREFIX):
            k = linker.id_of(k) or k
        if isinstance(v, str) and v.startswith(REF_PREFIX):
            v = linker.id_of(v) if v != NULL_REF else None
        out[k] = v
    return out


# -- per-type extras ---------------------------------------------------------------------


def _vm(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    running = record.get("power_state") in ("Running", "Paused")
    if running:
        host = linker.id_of(record.get("resident_on", NULL_REF), "host")
        obj["$container"] = host or linker.pool_id
    elif record.get("is_a_template") or record.get("is_a_snapshot"):
        obj["$container"] = linker.pool_id  # not started from there: no need to look
    else:
        obj["$container"] = _local_sr_host(record, linker) or linker.pool_id
    fold_guest_metrics(obj, linker.side(record.get("guest_metrics", NULL_REF)))
    obj["VIFs"] = obj.get("$VIFs", [])
    obj["affinityHost"] = obj.get("$affinity")
    # xo-server's derived summaries, which its clients read instead of the raw fields.
    obj["memory"] = {
        "dynamic": [
            _to_int(record.get("memory_dynamic_min")),
            _to_int(record.get("memory_dynamic_max")),
        ],
        "static": [
            _to_int(record.get("memory_static_min")),
            _to_int(record.get("memory_static_max")),
        ],
        "size": _to_int(record.get("memory_dynamic_max")),
    }
    obj["CPUs"] = {
        "max": _to_int(record.get("VCPUs_max")),
        "number": _to_int(record.get("VCPUs_at_startup")),
    }


def _local_sr_host(record: dict[str, Any], linker: Linker) -> str | None:
    """The host of the first local SR holding one of the VM's disks: a halted VM can only
    start there (xo-server-api.md 4.2)."""
    for vbd_ref in record.get("VBDs", []):
        vbd = linker.read(vbd_ref)
        vdi = linker.read_linked(vbd.get("$VDI")) if vbd else None
        sr = linker.read_linked(vdi.get("$SR")) if vdi else None
        if sr and not sr.get("shared") and sr.get("$container") not in (None, linker.pool_id):
            return str(sr["$container"])
    return None


# IPv4 keys of guest metrics `networks` ("0/ip", "0/ipv4/0"), then IPv6 ("0/ipv6/0").
_IPV4_KEY = re.compile(r"^(\d+)/ip(?:v4/(\d+))?$")
_IPV6_KEY = re.compile(r"^(\d+)/ipv6/(\d+)$")


def main_ip_address(networks: dict[str, str]) -> str | None:
    """The address xo-server shows for a VM: the first IPv4 by device then index, else the
    first IPv6."""
    for pattern in (_IPV4_KEY, _IPV6_KEY):
        keys = []
        for key in networks:
            match = pattern.match(key)
            if match:
                keys.append((int(match.group(1)), int(match.group(2) or 0), key))
        if keys:
            return networks[min(keys)[2]]
    return None


def _slim_guest_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """What a VM shows of its guest metrics: the rest (os_version, other, ...) is not kept."""
    return {
        "networks": record.get("networks") or {},
        "PV_drivers_detected": record.get("PV_drivers_detected", True),
        "PV_drivers_up_to_date": record.get("PV_drivers_up_to_date"),
        "PV_drivers_version": record.get("PV_drivers_version") or {},
    }


def fold_guest_metrics(obj: XoObject, metrics: dict[str, Any] | None) -> None:
    """A VM's xo-server fields from its guest metrics (None: no guest agent running)."""
    networks: dict[str, str] = (metrics.get("networks") or {}) if metrics else {}
    detected = bool(metrics and metrics.get("PV_drivers_detected", True))
    version = (metrics or {}).get("PV_drivers_version") or {}
    obj["addresses"] = networks
    obj["mainIpAddress"] = main_ip_address(networks)
    obj["PV_drivers"] = detected
    obj["PV_drivers_up_to_date"] = (
        bool(metrics.get("PV_drivers_up_to_date")) if detected and metrics else None
    )
    obj["PV_drivers_version"] = (
        f"{version['major']}.{version['minor']}"
        if detected and "major" in version and "minor" in version
        else None
    )


@dataclass(frozen=True, slots=True)
class Fold:
    """A side class folded into the objects linking it (through their field `link`): the
    cache keeps `slim(record)` of each, and on a change calls `fold(owner, slim)` on the
    owner's published object."""

    link: str
    slim: Callable[[dict[str, Any]], dict[str, Any]]
    fold: Callable[[XoObject, dict[str, Any] | None], None]


FOLDS: dict[str, Fold] = {
    "VM_guest_metrics": Fold("guest_metrics", _slim_guest_metrics, fold_guest_metrics),
}


def _host(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    metrics = linker.read(record.get("metrics", NULL_REF))
    live = bool(metrics.get("live")) if metrics else False
    obj["power_state"] = "Running" if live else "Halted"
    if metrics:
        obj["memory"] = {
            "size": _to_int(metrics.get("memory_total", 0)),
            "usage": _to_int(metrics.get("memory_total", 0))
            - _to_int(metrics.get("memory_free", 0)),
        }


def _pool(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    obj["master"] = obj.get("$master")
    obj["default_SR"] = obj.get("$default_SR")


def _sr(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    obj["size"] = obj.get("physical_size")
    obj["usage"] = obj.get("physical_utilisation")
    obj["VDIs"] = obj.get("$VDIs", [])
    container = linker.pool_id
    if not record.get("shared"):
        # A local SR lives on the host of its (single) PBD.
        for pbd_ref in record.get("PBDs", []):
            pbd = linker.read(pbd_ref)
            if pbd and pbd.get("$host"):
                container = pbd["$host"]
                break
    obj["$container"] = container


def _vdi(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    obj["size"] = obj.get("virtual_size")
    obj["usage"] = obj.get("physical_utilisation")


def _vbd(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    obj["VDI"] = obj.get("$VDI")
    obj["VM"] = obj.get("$VM")
    obj["attached"] = record.get("currently_attached")
    obj["is_cd_drive"] = record.get("type") == "CD"
    obj["position"] = record.get("userdevice")
    obj["read_only"] = record.get("mode") == "RO"


def _attached(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    obj["attached"] = record.get("currently_attached")


def _network(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    obj["PIFs"] = obj.get("$PIFs", [])
    obj["VIFs"] = obj.get("$VIFs", [])


def _task(obj: XoObject, record: dict[str, Any], linker: Linker) -> None:
    obj["allowedOperations"] = record.get("allowed_operations", [])
    obj["xapiRef"] = obj["_xapiRef"]
    obj["$host"] = obj.get("$resident_on")
    progress = record.get("progress")
    obj["progress"] = float(progress) if isinstance(progress, int | float | str) else 0.0
    applies_to = (record.get("other_config") or {}).get("applies_to")
    if applies_to:
        obj["applies_to"] = linker.id_of(applies_to) or applies_to


_EXTRAS: dict[str, Callable[[XoObject, dict[str, Any], Linker], None]] = {
    "VM": _vm,
    "host": _host,
    "pool": _pool,
    "SR": _sr,
    "VDI": _vdi,
    "VBD": _vbd,
    "VIF": _attached,
    "PBD": _attached,
    "PIF": _attached,
    "network": _network,
    "task": _task,
}
