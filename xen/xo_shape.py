"""XAPI record -> xo-server object: one table per XAPI class.

The tables give, field by field, what xo-server 5.207.2 publishes for each class (its
`xapi-object-to-xo`), so that every client written for xo-server (xo-web first) reads our
objects unchanged; /work/shared/reference/xo-objects/ holds the objects the real xo-server built
from the simulated lab, and tests/xen/test_xo_objects.py compares ours with them. A field is a
`Rule`: a function of `Src` (the XAPI record, plus the links and linked records it may read).
A rule returning `ABSENT` leaves the field out, as xo-server's `undefined` is absent from JSON.

- Every object also gets `id` (uuid, or the ref for classes without one), `type`, `uuid`,
  `$pool` / `$poolId` and `_xapiRef`.
- Links are XO ids: `link("host")` is the id of the object the ref points to (absent for the
  null ref), `links("VIFs")` the ids of a ref set. A ref not converted yet is left out and the
  cache converts the object again when it arrives.
- Classes without a table are not published: xo-server does not publish them either. Some are
  read by the tables: SIDES are side records folded into their owner (a VM's metrics and guest
  metrics), kept slim by the cache, and their fields (`SIDE_FIELDS`) are computed again when
  they change, from the owner's `inputs` only, so that the owner's whole XAPI record need not
  be kept; READ_ONLY classes are kept raw by the cache for the tables that `read` them.
- Beyond xo-server's fields, a task keeps `error_info` (migrations report XAPI's error from it).
"""

from __future__ import annotations

import math
import re
import sys
import xmlrpc.client
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from xen.wire import NULL_REF, datetime_to_seconds
from xen.xapi_schema import CLASS_NAMES, REF_FIELDS

XoObject = dict[str, Any]
Record = Mapping[str, Any]

_CANONICAL = {name.lower(): name for name in CLASS_NAMES}


def canonical_class(name: str) -> str:
    return _CANONICAL.get(name.lower(), name)


class Linker(Protocol):
    """What a conversion may ask the cache for."""

    pool_id: str

    def id_of(self, ref: str, target: str | None = None) -> str | None:
        """XO id of a ref of this pool; None for the null ref or a ref not known (yet).
        `target` is the class the ref points to, when the datamodel says."""
        ...

    def ids_of(self, refs: list[str], target: str | None = None) -> list[str]:
        """`id_of` for each ref of a ref set, those not known (yet) left out."""
        ...

    def read(self, ref: str) -> Record | None:
        """Another object: its XO shape, or its raw record for SIDES / READ_ONLY classes and
        RAW_KEPT ones; marks a dependency (this object is converted again when it changes)."""
        ...

    def read_linked(self, obj_id: str | None) -> XoObject | None:
        """Another published object of this pool by XO id; marks a dependency."""
        ...


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(slots=True)
class Src:
    """What a rule reads: `r` the XAPI record (for SIDE_FIELDS: only the owner's `inputs`)."""

    cls: str
    ref: str
    r: Record
    linker: Linker
    sides: dict[str, Record | None] = field(default_factory=dict)

    @property
    def pool_id(self) -> str:
        return self.linker.pool_id

    def id(self, ref: Any, target: str | None = None) -> str | None:
        if not isinstance(ref, str) or not ref or ref == NULL_REF:
            return None
        return self.linker.id_of(ref, target)

    def read(self, ref: Any) -> Record | None:
        if not isinstance(ref, str) or not ref or ref == NULL_REF:
            return None
        return self.linker.read(ref)

    def side(self, link: str) -> Record | None:
        return self.sides.get(link)

    @property
    def other_config(self) -> Record:
        return self.r.get("other_config") or {}

    @property
    def platform(self) -> Record:
        return self.r.get("platform") or {}


Rule = Callable[[Src], Any]


# -- rule makers: most fields are one of these ---------------------------------------------


def raw(name: str, default: Any = ABSENT) -> Rule:
    """The XAPI field as it is (maps, strings, lists of strings, bools)."""
    return lambda s: s.r.get(name, default)


def num(name: str) -> Rule:
    """An int XAPI sends as a string (`+obj.field` in xo-server)."""
    return lambda s: to_number(s.r.get(name))


def flag(name: str) -> Rule:
    return lambda s: bool(s.r.get(name))


def link(name: str) -> Rule:
    def rule(s: Src) -> Any:
        obj_id = s.id(s.r.get(name), REF_FIELDS.get(s.cls, {}).get(name))
        return ABSENT if obj_id is None else obj_id

    return rule


def links(name: str) -> Rule:
    def rule(s: Src) -> list[str]:
        refs = s.r.get(name)
        if not refs:
            return []
        return s.linker.ids_of(refs, REF_FIELDS.get(s.cls, {}).get(name))

    return rule


def stamp(name: str) -> Rule:
    return lambda s: to_timestamp(s.r.get(name))


def config_flag(key: str, config: str = "other_config") -> Rule:
    """`obj.<config>[key] === 'true'`."""
    return lambda s: (s.r.get(config) or {}).get(key) == "true"


# -- value helpers -------------------------------------------------------------------------


def to_number(value: Any) -> Any:
    """JavaScript's unary `+` on what XAPI sends: ints and floats from strings, NaN -> None
    (JSON.stringify writes NaN as null)."""
    if isinstance(value, bool | int | float):
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
            return number if math.isfinite(number) else None
    return None


def to_timestamp(value: Any) -> int | None:
    """xo-server's `toTimestamp`: XAPI datetimes and numeric strings ("1700000000.") to epoch
    seconds; absent, unparsable or the epoch itself -> null."""
    if value is None or value is ABSENT:
        return None
    if isinstance(value, xmlrpc.client.DateTime):
        return datetime_to_seconds(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) or None
    if isinstance(value, str):
        try:
            return int(float(value)) or None
        except ValueError:
            return datetime_to_seconds(value)
    return None


def _int(value: Any) -> int:
    number = to_number(value)
    return int(number) if number is not None else 0


# -- per-class tables ----------------------------------------------------------------------


def _pool_name(s: Src) -> Any:
    if s.r.get("name_label"):
        return s.r["name_label"]
    master = s.read(s.r.get("master"))
    return (master or {}).get("name_label", "")


def _pool_platform_version(s: Src) -> Any:
    master = s.read(s.r.get("master"))  # RAW_KEPT: the host's XAPI record
    return ((master or {}).get("software_version") or {}).get("platform_version", ABSENT)


def _ha_srs(s: Src) -> list[str]:
    out = []
    for ref in s.r.get("ha_statefiles") or ():
        vdi = s.read(ref)
        if vdi is not None and vdi.get("$SR"):
            out.append(vdi["$SR"])
    return out


def _cpus(s: Src) -> dict[str, Any]:
    info = s.r.get("cpu_info") or {}
    return {
        "cores": to_number(info.get("cpu_count")),
        "sockets": to_number(info.get("socket_count")),
    }


POOL: dict[str, Rule] = {
    "auto_poweron": config_flag("auto_poweron"),
    "cpus": _cpus,
    "crashDumpSr": link("crash_dump_SR"),
    "current_operations": raw("current_operations", {}),
    "default_SR": link("default_SR"),
    "HA_enabled": flag("ha_enabled"),
    "haRebootVmOnInternalShutdown": raw("ha_reboot_vm_on_internal_shutdown", True),
    "haSrs": _ha_srs,
    "master": link("master"),
    "migrationCompression": raw("migration_compression"),
    "name_description": raw("name_description", ""),
    "name_label": _pool_name,
    "otherConfig": raw("other_config", {}),
    "platform_version": _pool_platform_version,
    "suspendSr": link("suspend_image_SR"),
    "tags": raw("tags", []),
    "vtpmSupported": lambda s: (s.r.get("restrictions") or {}).get("restrict_vtpm") == "false",
    "zstdSupported": lambda s: (
        (s.r.get("restrictions") or {}).get("restrict_zstd_export") == "false"
    ),
}


def _host_metrics(s: Src) -> Record | None:
    return s.read(s.r.get("metrics"))


def _host_memory(s: Src) -> dict[str, int]:
    metrics = _host_metrics(s)
    if not metrics:
        return {"usage": 0, "size": 0, "total": 0}
    gib = 1024**3
    total = math.ceil(_int(metrics.get("memory_total")) / gib) * gib
    return {"usage": total - _int(metrics.get("memory_free")), "size": total}


def _host_power_state(s: Src) -> str:
    metrics = _host_metrics(s)
    if not metrics:
        return "Unknown"
    return "Running" if metrics.get("live") else "Halted"


def _software(s: Src, key: str, default: Any = ABSENT) -> Any:
    return (s.r.get("software_version") or {}).get(key, default)


def _supplemental_packs(s: Src) -> list[dict[str, Any]]:
    """Packs are `author:name` keys of software_version: `"<description>, version <v>"`."""
    packs = []
    for key, value in (s.r.get("software_version") or {}).items():
        parts = key.split(":")
        if len(parts) != 2 or not isinstance(value, str):
            continue
        description, _, version = value.partition(", ")
        packs.append(
            {
                "name": parts[1],
                "description": description,
                "author": parts[0],
                "version": version.split(" ")[1] if " " in version else ABSENT,
            }
        )
    return [{k: v for k, v in p.items() if v is not ABSENT} for p in packs]


def _reboot_required(s: Src) -> bool:
    if _software(s, "product_brand") == "XCP-ng":
        booted = to_timestamp(s.other_config.get("boot_time"))
        installed = to_number(s.other_config.get("rpm_patch_installation_time"))
        return booted is not None and installed is not None and booted < installed
    return bool(s.r.get("updates_requiring_reboot"))


def _certificates(s: Src) -> list[dict[str, Any]]:
    out = []
    for ref in s.r.get("certificates") or ():
        cert = s.read(ref)  # READ_ONLY class
        if cert is not None:
            out.append(
                {
                    "fingerprint": cert.get("fingerprint", ""),
                    "notAfter": to_timestamp(cert.get("not_after")),
                }
            )
    return out


def _chipset_info(s: Src) -> dict[str, Any]:
    iommu = (s.r.get("chipset_info") or {}).get("iommu")
    return {} if iommu is None else {"iommu": iommu == "true"}


HOST: dict[str, Rule] = {
    "CPUs": raw("cpu_info", {}),
    "address": raw("address", ""),
    "agentStartTime": lambda s: to_timestamp(s.other_config.get("agent_start_time")),
    "bios_strings": raw("bios_strings", {}),
    "build": lambda s: _software(s, "build_number"),
    "certificates": _certificates,
    "chipset_info": _chipset_info,
    "controlDomain": link("control_domain"),
    "cpus": _cpus,
    "current_operations": raw("current_operations", {}),
    "enabled": flag("enabled"),
    "hostname": raw("hostname", ""),
    "hvmCapable": lambda s: any(c.startswith("hvm") for c in s.r.get("capabilities") or ()),
    "iscsiIqn": lambda s: s.r.get("iscsi_iqn") or s.other_config.get("iscsi_iqn") or "",
    "license_expiry": lambda s: to_timestamp((s.r.get("license_params") or {}).get("expiry")),
    "license_params": raw("license_params", {}),
    "license_server": raw("license_server", {}),
    "logging": raw("logging", {}),
    "memory": _host_memory,
    "multipathing": config_flag("multipathing"),
    "name_description": raw("name_description", ""),
    "name_label": raw("name_label", ""),
    "otherConfig": raw("other_config", {}),
    "patches": links("patches"),
    "power_state": _host_power_state,
    "powerOnMode": raw("power_on_mode", ""),
    "productBrand": lambda s: _software(s, "product_brand"),
    "rebootRequired": _reboot_required,
    "residentVms": links("resident_VMs"),
    "startTime": lambda s: to_timestamp(s.other_config.get("boot_time")),
    "supplementalPacks": _supplemental_packs,
    "tags": raw("tags", []),
    "version": lambda s: _software(s, "product_version"),
    "zstdSupported": lambda s: (
        (s.r.get("license_params") or {}).get("restrict_zstd_export") == "false"
    ),
    "PIFs": links("PIFs"),
    "$PIFs": links("PIFs"),
    "PCIs": links("PCIs"),
    "$PCIs": links("PCIs"),
    "PGPUs": links("PGPUs"),
    "$PGPUs": links("PGPUs"),
    "$PBDs": links("PBDs"),
}


# VM ----------------------------------------------------------------------------------------


def vm_type(record: Record) -> str:
    if record.get("is_control_domain"):
        return "VM-controller"
    if record.get("is_a_snapshot"):
        return "VM-snapshot"
    if record.get("is_a_template"):
        return "VM-template"
    return "VM"


def _is_running(r: Record) -> bool:
    return r.get("power_state") in ("Running", "Paused")


def _domain_type(r: Record) -> str:
    domain_type = r.get("domain_type")
    if domain_type and domain_type != "unspecified":
        return str(domain_type)
    return "hvm" if r.get("HVM_boot_policy") else "pv"


def _vm_container(s: Src) -> Any:
    """The host it is resident on; halted, the pool, unless a disk is on a local SR: then the
    host of that SR's (first) PBD, where it can only start."""
    resident = s.r.get("resident_on")
    if resident and resident != NULL_REF:
        return s.id(resident, "host") or s.pool_id
    for vbd_ref in s.r.get("VBDs") or ():
        vbd = s.read(vbd_ref)
        vdi = s.linker.read_linked(vbd.get("VDI")) if vbd else None
        sr = s.linker.read_linked(vdi.get("$SR")) if vdi else None
        if sr is not None and not sr.get("shared"):
            pbds = sr.get("$PBDs") or []
            pbd = s.linker.read_linked(pbds[0]) if pbds else None
            if pbd is not None and pbd.get("host"):
                return pbd["host"]
    return s.pool_id


def _vm_current_operations(s: Src) -> dict[str, Any]:
    """Keyed by task id, not ref; operations of tasks not known (yet) are left out."""
    out = {}
    for ref, operation in (s.r.get("current_operations") or {}).items():
        task_id = s.id(ref, "task")
        if task_id is not None:
            out[task_id] = operation
    return out


def _firmware_supported(s: Src) -> bool:
    """`recommendations` may restrict the firmware in `HVM_boot_params`."""
    text = s.r.get("recommendations") or ""
    firmware = (s.r.get("HVM_boot_params") or {}).get("firmware")
    if "restriction" not in text:
        return True
    wanted = f'field="supports-{firmware}"'
    for match in re.finditer(r"<restriction\b[^>]*>", text):
        tag = match.group(0)
        if wanted in tag and 'value="no"' in tag:
            return False
    return True


def _cores_per_socket(s: Src) -> Any:
    value = s.platform.get("cores-per-socket")
    return to_number(value) if value is not None else to_number(s.r.get("VCPUs_max"))


def _vga(s: Src) -> Any:
    return s.platform.get("vga", "cirrus") if _domain_type(s.r) == "hvm" else ABSENT


def _videoram(s: Src) -> Any:
    return s.platform.get("videoram", 4) if _domain_type(s.r) == "hvm" else ABSENT


def _vcpus_param(key: str, convert: Callable[[str], Any]) -> Rule:
    def rule(s: Src) -> Any:
        value = (s.r.get("VCPUs_params") or {}).get(key)
        return convert(value) if value else ABSENT

    return rule


def _template_info(s: Src) -> dict[str, Any]:
    config = s.other_config
    info: dict[str, Any] = {
        "disks": _template_disks(config.get("disks") or ""),
        "install_methods": [m for m in (config.get("install-methods") or "").split(",") if m],
    }
    if "install-arch" in config:
        info["arch"] = config["install-arch"]
    if "install-repository" in config:
        info["install_repository"] = config["install-repository"]
    return info


def _template_disks(xml: str) -> list[dict[str, Any]]:
    """`<provision><disk device="0" size="..." sr="" bootable="true" type="system"/>`."""
    disks = []
    for match in re.finditer(r"<disk\b([^>]*)/?>", xml):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        sr = attrs.pop("sr", "")
        disk: dict[str, Any] = dict(attrs)
        disk["bootable"] = attrs.get("bootable") == "true"
        disk["size"] = to_number(attrs.get("size"))
        disk["SR"] = sr
        disks.append(disk)
    return disks


def _default_template(r: Record) -> bool:
    return (
        bool(r.get("is_default_template"))
        or (r.get("other_config") or {}).get("default_template") == "true"
    )


VM_COMMON: dict[str, Rule] = {
    "affinityHost": link("affinity"),
    "auto_poweron": config_flag("auto_poweron"),
    "bios_strings": raw("bios_strings", {}),
    "blockedOperations": raw("blocked_operations", {}),
    "boot": raw("HVM_boot_params", {}),
    "coresPerSocket": _cores_per_socket,
    "cpuCap": _vcpus_param("cap", lambda v: to_number(v)),
    "cpuMask": _vcpus_param("mask", lambda v: [to_number(x) for x in v.split(",")]),
    "cpuWeight": _vcpus_param("weight", lambda v: to_number(v)),
    "current_operations": _vm_current_operations,
    "expNestedHvm": lambda s: s.platform.get("exp-nested-hvm") == "true",
    "hasVendorDevice": flag("has_vendor_device"),
    "high_availability": raw("ha_restart_priority", ""),
    "isFirmwareSupported": _firmware_supported,
    "isNestedVirtEnabled": lambda s: (
        s.platform.get("nested-virt") == "true" or s.platform.get("exp-nested-hvm") == "true"
    ),
    "name_description": raw("name_description", ""),
    "name_label": raw("name_label", ""),
    "needsVtpm": lambda s: s.platform.get("vtpm") == "true",
    "nicType": lambda s: s.platform.get("nic_type", ABSENT),
    "notes": lambda s: s.other_config.get("xo:notes", ABSENT),
    "other": raw("other_config", {}),
    "parent": link("parent"),
    "power_state": raw("power_state", ""),
    "PV_args": lambda s: s.r.get("PV_args", "") if _domain_type(s.r) != "hvm" else ABSENT,
    "secureBoot": lambda s: s.platform.get("secureboot") == "true",
    "snapshots": links("snapshots"),
    "startDelay": num("start_delay"),
    "suspendSr": link("suspend_SR"),
    "tags": raw("tags", []),
    "vga": _vga,
    "videoram": _videoram,
    "viridian": lambda s: s.platform.get("viridian") == "true",
    "virtualizationMode": lambda s: _domain_type(s.r),
    "xenStoreData": raw("xenstore_data", {}),
    "VIFs": links("VIFs"),
    "VTPMs": links("VTPMs"),
    "VGPUs": links("VGPUs"),
    "$VGPUs": links("VGPUs"),
    "$VBDs": links("VBDs"),
    "$container": _vm_container,
}

VM_BY_TYPE: dict[str, dict[str, Rule]] = {
    "VM": {},
    "VM-controller": {},
    "VM-snapshot": {
        "snapshot_time": stamp("snapshot_time"),
        "$snapshot_of": link("snapshot_of"),
        "suspendVdi": link("suspend_VDI"),
    },
    "VM-template": {
        "isDefaultTemplate": lambda s: _default_template(s.r),
        "template_info": _template_info,
    },
}


# VM fields from its metrics and guest metrics (SIDES), from these record fields only:
VM_INPUTS = (
    "power_state",
    "is_a_template",
    "is_a_snapshot",
    "is_control_domain",
    "VCPUs_max",
    "VCPUs_at_startup",
    "memory_dynamic_min",
    "memory_dynamic_max",
    "memory_static_min",
    "memory_static_max",
    "platform",
)


def _xen_tools(s: Src) -> Any:
    """Unknown (absent) unless running with metrics; false without a guest agent."""
    if not _is_running(s.r) or s.side("metrics") is None:
        return ABSENT
    guest = s.side("guest_metrics")
    version = (guest or {}).get("PV_drivers_version") or {}
    if guest is None or "major" not in version or "minor" not in version:
        return False
    return {
        "major": to_number(version["major"]),
        "minor": to_number(version["minor"]),
        "version": to_number(f"{version['major']}.{version['minor']}"),
    }


def _guest_tools(key: str) -> Rule:
    """managementAgentDetected / pvDrivers*: only while running with both metrics."""

    def rule(s: Src) -> Any:
        guest = s.side("guest_metrics")
        if not _is_running(s.r) or s.side("metrics") is None or guest is None:
            return ABSENT
        version = guest.get("PV_drivers_version") or {}
        has_version = "major" in version and "minor" in version
        detected = guest.get("PV_drivers_detected", has_version)
        if key == "managementAgentDetected":
            return has_version or (guest.get("other") or {}).get("feature-static-ip-setting") == "1"
        if key == "pvDriversDetected":
            return detected
        if key == "pvDriversVersion":
            if not has_version:
                return ABSENT
            return f"{version['major']}.{version['minor']}.{version.get('micro')}-{version.get('build')}"
        return guest.get("PV_drivers_up_to_date") if detected else ABSENT

    return rule


def _vm_cpus(s: Src) -> dict[str, Any]:
    metrics = s.side("metrics")
    if s.r.get("is_a_template") or not (_is_running(s.r) and metrics and _xen_tools(s)):
        number = to_number(s.r.get("VCPUs_at_startup"))
    else:
        number = to_number(metrics.get("VCPUs_number"))
    return {"max": to_number(s.r.get("VCPUs_max")), "number": number}


def _vm_memory(s: Src) -> dict[str, Any]:
    dyn_max = to_number(s.r.get("memory_dynamic_max"))
    memory: dict[str, Any] = {
        "dynamic": [to_number(s.r.get("memory_dynamic_min")), dyn_max],
        "static": [
            to_number(s.r.get("memory_static_min")),
            to_number(s.r.get("memory_static_max")),
        ],
    }
    guest_memory = (s.side("guest_metrics") or {}).get("memory") or {}
    metrics = s.side("metrics")
    if not _is_running(s.r):
        memory["size"] = dyn_max
    elif guest_memory.get("used"):
        memory["usage"] = to_number(guest_memory["used"])
        memory["size"] = to_number(guest_memory.get("total"))
    elif metrics:
        memory["size"] = to_number(metrics.get("memory_actual"))
    else:
        memory["size"] = dyn_max
    return memory


def normalize_vm_networks(networks: Record) -> dict[str, str]:
    """Guest addresses as `<device>/ipv4/<n>` and `<device>/ipv6/<n>` (old agents report
    `<device>/ip`, possibly several space-separated addresses)."""
    out: dict[str, str] = {}
    for key, value in networks.items():
        device, _, rest = key.partition("/")
        if rest == "ip":
            for n, address in enumerate(str(value).split()):
                out.setdefault(f"{device}/ipv4/{n}", address)
        else:
            out[key] = value
    return out


# IPv4 keys (`0/ipv4/0`), then IPv6 (`0/ipv6/0`), after normalization.
_IPV4_KEY = re.compile(r"^(\d+)/ipv4/(\d+)$")
_IPV6_KEY = re.compile(r"^(\d+)/ipv6/(\d+)$")


def main_ip_address(networks: Record) -> str | None:
    """The address xo-server shows for a VM: the first IPv4 by device then index, else the
    first IPv6."""
    normalized = normalize_vm_networks(networks)
    for pattern in (_IPV4_KEY, _IPV6_KEY):
        keys = []
        for key in normalized:
            match = pattern.match(key)
            if match:
                keys.append((int(match.group(1)), int(match.group(2)), key))
        if keys:
            return normalized[min(keys)[2]]
    return None


def _is_windows(s: Src) -> bool:
    os_version = (s.side("guest_metrics") or {}).get("os_version") or {}
    return (
        s.platform.get("device_id") == "0002"
        or "windows" in str(os_version.get("distro", "") or os_version.get("name", "")).lower()
    )


def _vulnerabilities(s: Src) -> Any:
    """XSA-468 concerns Windows PV drivers only. We cannot read a Windows guest's driver
    versions (xo-server reads them from the guest's xenstore): a Windows VM without detected
    PV drivers is reported as unknown, as xo-server does; any other VM is not vulnerable."""
    if not _is_windows(s):
        return {"xsa468": False}
    guest = s.side("guest_metrics")
    if guest is None or not guest.get("PV_drivers_detected"):
        return {"xsa468": {"reason": "no-pv-drivers-detected"}}
    return {"xsa468": False}


def _main_ip(s: Src) -> Any:
    guest = s.side("guest_metrics")
    address = main_ip_address(guest.get("networks") or {}) if guest else None
    return ABSENT if address is None else address


def _metrics_time(name: str) -> Rule:
    def rule(s: Src) -> Any:
        metrics = s.side("metrics")
        return to_timestamp(metrics.get(name)) if metrics is not None else ABSENT

    return rule


VM_SIDE_FIELDS: dict[str, Rule] = {
    "addresses": lambda s: normalize_vm_networks(
        (s.side("guest_metrics") or {}).get("networks") or {}
    ),
    "CPUs": _vm_cpus,
    "installTime": _metrics_time("install_time"),
    "mainIpAddress": _main_ip,
    "managementAgentDetected": _guest_tools("managementAgentDetected"),
    "memory": _vm_memory,
    "os_version": lambda s: (s.side("guest_metrics") or {}).get("os_version") or None,
    "pvDriversDetected": _guest_tools("pvDriversDetected"),
    "pvDriversUpToDate": _guest_tools("pvDriversUpToDate"),
    "pvDriversVersion": _guest_tools("pvDriversVersion"),
    "startTime": _metrics_time("start_time"),
    "vulnerabilities": lambda s: _vulnerabilities(s) if vm_type(s.r) == "VM" else ABSENT,
    "xenTools": _xen_tools,
}


# Storage -------------------------------------------------------------------------------------

# How an SR type allocates space (xo-server's table); types not listed have no strategy.
ALLOCATION_BY_TYPE = {
    **dict.fromkeys(["ext", "file", "nfs", "shm", "smb", "xosan", "zfs"], "thin"),
    **dict.fromkeys(
        [
            "hba",
            "iscsi",
            "lvhd",
            "lvhdofcoe",
            "lvhdohba",
            "lvhdoiscsi",
            "lvm",
            "lvmofcoe",
            "lvmohba",
            "lvmoiscsi",
            "ocfs",
            "ocfsohba",
            "ocfsoiscsi",
            "rawhba",
            "rawiscsi",
            "udev",
        ],
        "thick",
    ),
}


def _sr_container(s: Src) -> Any:
    pbds = s.r.get("PBDs") or []
    if s.r.get("shared") or not pbds:
        return s.pool_id
    pbd = s.read(pbds[0])
    return (pbd or {}).get("host") or s.pool_id


def _allocation(s: Src) -> Any:
    if s.r.get("type") == "linstor":
        pbds = s.r.get("PBDs") or []
        pbd = s.read(pbds[0]) if pbds else None
        return ((pbd or {}).get("device_config") or {}).get("provisioning", "unknown")
    return ALLOCATION_BY_TYPE.get(s.r.get("type", ""), ABSENT)


SR: dict[str, Rule] = {
    "allocationStrategy": _allocation,
    "content_type": raw("content_type", ""),
    "current_operations": raw("current_operations", {}),
    "inMaintenanceMode": lambda s: "xo:maintenanceState" in s.other_config,
    "name_description": raw("name_description", ""),
    "name_label": raw("name_label", ""),
    "other_config": raw("other_config", {}),
    "physical_usage": num("physical_utilisation"),
    "shared": flag("shared"),
    "size": num("physical_size"),
    "sm_config": raw("sm_config", {}),
    "SR_type": raw("type", ""),
    "tags": raw("tags", []),
    "usage": num("virtual_allocation"),
    "VDIs": links("VDIs"),
    "$container": _sr_container,
    "$PBDs": links("PBDs"),
}


def vdi_type(record: Record) -> str:
    if record.get("is_a_snapshot"):
        return "VDI-snapshot"
    if record.get("managed") is False:
        return "VDI-unmanaged"
    return "VDI"


def _chain_physical_usage(s: Src) -> Any:
    """Physical usage of the VDI and of its VHD parents (sm_config `vhd-parent`, by uuid)."""
    if s.r.get("is_a_snapshot"):
        return ABSENT
    total = _int(s.r.get("physical_utilisation"))
    parent_id = (s.r.get("sm_config") or {}).get("vhd-parent")
    seen = {s.r.get("uuid")}
    while parent_id and parent_id not in seen:
        seen.add(parent_id)
        parent = s.linker.read_linked(parent_id)
        if parent is None:
            break
        total += _int(parent.get("usage"))
        parent_id = parent.get("parent")
    return total


VDI: dict[str, Rule] = {
    "cbt_enabled": flag("cbt_enabled"),
    "chainPhysicalUsage": _chain_physical_usage,
    "current_operations": raw("current_operations", {}),
    "missing": flag("missing"),
    "name_description": raw("name_description", ""),
    "name_label": raw("name_label", ""),
    "other_config": raw("other_config", {}),
    "parent": lambda s: (s.r.get("sm_config") or {}).get("vhd-parent", ABSENT),
    "size": num("virtual_size"),
    "snapshots": links("snapshots"),
    "snapshot_time": lambda s: (
        to_timestamp(s.r.get("snapshot_time")) if s.r.get("is_a_snapshot") else ABSENT
    ),
    "tags": raw("tags", []),
    "usage": num("physical_utilisation"),
    "VDI_type": raw("type", ""),
    "$snapshot_of": lambda s: link("snapshot_of")(s) if s.r.get("is_a_snapshot") else ABSENT,
    "$SR": link("SR"),
    "$VBDs": links("VBDs"),
}

VBD: dict[str, Rule] = {
    "attached": flag("currently_attached"),
    "bootable": flag("bootable"),
    "device": lambda s: s.r.get("device") or None,
    "is_cd_drive": lambda s: s.r.get("type") == "CD",
    "position": raw("userdevice", ""),
    "read_only": lambda s: s.r.get("mode") == "RO",
    "VDI": link("VDI"),
    "VM": link("VM"),
}

# Keys of PBD device_config whose values xo-server never sends.
_SENSITIVE_KEY = re.compile(r"password|secret|passphrase", re.IGNORECASE)


def _device_config(s: Src) -> dict[str, Any]:
    config = s.r.get("device_config") or {}
    return {k: "* obfuscated *" if _SENSITIVE_KEY.search(k) else v for k, v in config.items()}


PBD: dict[str, Rule] = {
    "attached": flag("currently_attached"),
    "device_config": _device_config,
    "host": link("host"),
    "otherConfig": raw("other_config", {}),
    "SR": link("SR"),
}


# Network --------------------------------------------------------------------------------------


def _pif_metrics(key: str, convert: Callable[[Any], Any] = lambda v: v) -> Rule:
    def rule(s: Src) -> Any:
        metrics = s.read(s.r.get("metrics"))  # READ_ONLY class
        return convert(metrics.get(key)) if metrics is not None else ABSENT

    return rule


PIF: dict[str, Rule] = {
    "attached": flag("currently_attached"),
    "carrier": lambda s: bool((s.read(s.r.get("metrics")) or {}).get("carrier")),
    "device": raw("device", ""),
    "deviceName": _pif_metrics("device_name"),
    "disallowUnplug": flag("disallow_unplug"),
    "dns": raw("DNS", ""),
    "gateway": raw("gateway", ""),
    "ip": raw("IP", ""),
    "ipv6": raw("IPv6", []),
    "ipv6Mode": raw("ipv6_configuration_mode", ""),
    "isBondMaster": lambda s: bool(s.r.get("bond_master_of")),
    "isBondSlave": lambda s: s.r.get("bond_slave_of", NULL_REF) != NULL_REF,
    "mac": raw("MAC", ""),
    "management": flag("management"),
    "mode": raw("ip_configuration_mode", ""),
    "mtu": num("MTU"),
    "netmask": raw("netmask", ""),
    "physical": flag("physical"),
    "primaryAddressType": raw("primary_address_type", ""),
    "speed": _pif_metrics("speed", to_number),
    "vlan": num("VLAN"),
    "$host": link("host"),
    "$network": link("network"),
}


def _tx_checksumming(s: Src) -> bool:
    return s.other_config.get("ethtool-tx") not in ("false", "off")


def _rate_limit(s: Src) -> Any:
    if s.r.get("qos_algorithm_type") == "ratelimit":
        kbps = (s.r.get("qos_algorithm_params") or {}).get("kbps")
        if kbps is not None:
            return to_number(kbps)
    return ABSENT


VIF: dict[str, Rule] = {
    "allowedIpv4Addresses": raw("ipv4_allowed", []),
    "allowedIpv6Addresses": raw("ipv6_allowed", []),
    "attached": flag("currently_attached"),
    "device": raw("device", ""),
    "lockingMode": raw("locking_mode", ""),
    "MAC": raw("MAC", ""),
    "MTU": num("MTU"),
    "other_config": raw("other_config", {}),
    "rateLimit": _rate_limit,
    "txChecksumming": _tx_checksumming,
    "$network": link("network"),
    "$VM": link("VM"),
}


def _is_bonded(s: Src) -> bool:
    for ref in s.r.get("PIFs") or ():
        pif = s.read(ref)
        if pif is not None and pif.get("isBondMaster"):
            return True
    return False


NETWORK: dict[str, Rule] = {
    "automatic": config_flag("automatic"),
    "bridge": raw("bridge", ""),
    "current_operations": raw("current_operations", {}),
    "defaultIsLocked": lambda s: s.r.get("default_locking_mode") == "disabled",
    "insecureNbd": lambda s: "insecure_nbd" in (s.r.get("purpose") or ()),
    "isBonded": _is_bonded,
    "MTU": num("MTU"),
    "name_description": raw("name_description", ""),
    "name_label": raw("name_label", ""),
    "nbd": lambda s: "nbd" in (s.r.get("purpose") or ()),
    "other_config": raw("other_config", {}),
    "tags": raw("tags", []),
    "PIFs": links("PIFs"),
    "VIFs": links("VIFs"),
}


# Others ---------------------------------------------------------------------------------------

SM: dict[str, Rule] = {
    "SM_type": raw("type", ""),
    "configuration": raw("configuration", {}),
    "driver_filename": raw("driver_filename", ""),
    "features": lambda s: {k: to_number(v) for k, v in (s.r.get("features") or {}).items()},
    "name_description": raw("name_description", ""),
    "name_label": raw("name_label", ""),
    "required_cluster_stack": raw("required_cluster_stack", []),
    "supported_image_formats": raw("supported_image_formats", []),
    "vendor": raw("vendor", ""),
}

MESSAGE: dict[str, Rule] = {
    "body": raw("body", ""),
    "name": raw("name", ""),
    "time": stamp("timestamp"),
    "$object": raw("obj_uuid", ""),  # already a uuid
}


def _task_progress(s: Src) -> float:
    number = to_number(s.r.get("progress"))
    return float(number) if number is not None else 0.0


def _applies_to(s: Src) -> Any:
    ref = s.other_config.get("applies_to")
    return (s.id(ref) or ref) if ref else ABSENT


TASK: dict[str, Rule] = {
    "allowedOperations": raw("allowed_operations", []),
    "applies_to": _applies_to,
    "created": stamp("created"),
    "current_operations": raw("current_operations", {}),
    "error_info": raw("error_info", []),  # ours: the XAPI error of a failed task
    "finished": stamp("finished"),
    "name_description": raw("name_description", ""),
    "name_label": raw("name_label", ""),
    "progress": _task_progress,
    "result": raw("result", ""),
    "status": raw("status", ""),
    "xapiRef": lambda s: s.ref,
    "$host": link("resident_on"),
}


@dataclass(frozen=True, slots=True)
class Shape:
    """How one XAPI class is published. `fields(record)` gives the table for a record (VMs
    have one per type); `sides` maps link fields to SIDES classes whose data `side_fields`
    read, together with the record's `inputs` only."""

    xo_type: Callable[[Record], str]
    fields: Callable[[Record], dict[str, Rule]]
    sides: Mapping[str, str] = field(default_factory=dict)
    side_fields: Mapping[str, Rule] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()


def _fixed(
    xo_type: str, table: dict[str, Rule]
) -> tuple[Callable[[Record], str], Callable[[Record], dict[str, Rule]]]:
    return (lambda _r: xo_type), (lambda _r: table)


_VM_TABLES = {t: {**VM_COMMON, **extra} for t, extra in VM_BY_TYPE.items()}

SHAPES: dict[str, Shape] = {
    "pool": Shape(*_fixed("pool", POOL)),
    "host": Shape(*_fixed("host", HOST)),
    "VM": Shape(
        vm_type,
        lambda r: _VM_TABLES[vm_type(r)],
        sides={"metrics": "VM_metrics", "guest_metrics": "VM_guest_metrics"},
        side_fields=VM_SIDE_FIELDS,
        inputs=VM_INPUTS,
    ),
    "SR": Shape(*_fixed("SR", SR)),
    "VDI": Shape(vdi_type, lambda _r: VDI),
    "VBD": Shape(*_fixed("VBD", VBD)),
    "PBD": Shape(*_fixed("PBD", PBD)),
    "PIF": Shape(*_fixed("PIF", PIF)),
    "VIF": Shape(*_fixed("VIF", VIF)),
    "network": Shape(*_fixed("network", NETWORK)),
    "SM": Shape(*_fixed("SM", SM)),
    "message": Shape(*_fixed("message", MESSAGE)),
    "task": Shape(*_fixed("task", TASK)),
}


# Side records: what the cache keeps of each (slim), for the SIDE_FIELDS that read them.
SIDES: dict[str, tuple[str, ...]] = {
    "VM_metrics": ("VCPUs_number", "memory_actual", "start_time", "install_time"),
    "VM_guest_metrics": (
        "networks",
        "os_version",
        "memory",
        "PV_drivers_version",
        "PV_drivers_detected",
        "PV_drivers_up_to_date",
        "other",
    ),
}

# Classes not published but read by tables (kept raw by the cache; few objects each).
READ_ONLY = frozenset({"host_metrics", "PIF_metrics", "Certificate"})
# Published classes whose raw record the cache also keeps, for tables reading them (`read`
# of a host gives its record: a pool reads its master's software_version).
RAW_KEPT = frozenset({"host"})

# Every class the event stream must carry.
FOLLOWED: tuple[str, ...] = (*SHAPES, *SIDES, *sorted(READ_ONLY))


def slim_side(cls: str, record: Record) -> dict[str, Any]:
    keep = SIDES[cls]
    return {sys.intern(k): record[k] for k in keep if k in record}


def _evaluate(table: Mapping[str, Rule], src: Src, obj: XoObject) -> None:
    for name, rule in table.items():
        value = rule(src)
        if value is not ABSENT:
            obj[name] = value


def to_xo(
    cls: str,
    ref: str,
    record: Record,
    linker: Linker,
    sides: dict[str, Record | None] | None = None,
) -> XoObject | None:
    """The xo-server object for one XAPI record (as received over XML-RPC), or None for a
    class that is not published. `sides`: the side records of SIDES links (the cache's)."""
    shape = SHAPES.get(cls)
    if shape is None:
        return None
    obj_type = shape.xo_type(record)
    obj_id = record.get("uuid") or ref
    if obj_type == "VM-template" and _default_template(record):
        obj_id = f"{linker.pool_id}-{obj_id}"  # default templates share uuids across pools
    obj: XoObject = {"id": obj_id, "type": obj_type}
    if "uuid" in record:
        obj["uuid"] = record["uuid"]
    src = Src(cls, ref, record, linker, sides or {})
    _evaluate(shape.fields(record), src, obj)
    _evaluate(shape.side_fields, src, obj)
    obj["$pool"] = linker.pool_id
    obj["$poolId"] = linker.pool_id
    obj["_xapiRef"] = ref
    return obj


def side_inputs(cls: str, record: Record) -> dict[str, Any] | None:
    """What the cache keeps of a record to compute its SIDE_FIELDS again later."""
    shape = SHAPES.get(cls)
    if shape is None or not shape.side_fields:
        return None
    return {k: record[k] for k in shape.inputs if k in record}


def refold(
    cls: str,
    ref: str,
    obj: XoObject,
    inputs: Record,
    linker: Linker,
    sides: dict[str, Record | None],
) -> XoObject:
    """A copy of `obj` with its SIDE_FIELDS computed again (a side record changed)."""
    shape = SHAPES[cls]
    out = {k: v for k, v in obj.items() if k not in shape.side_fields}
    _evaluate(shape.side_fields, Src(cls, ref, inputs, linker, sides), out)
    return out
