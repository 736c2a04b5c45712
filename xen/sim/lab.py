"""The lab file: a TOML description of simulated pools, parsed into plain dataclasses.

`load_lab()` reads the shipped `default_lab.toml` (or a given path); `generate_lab()` builds a
large synthetic lab for scale tests. Turning a `PoolSpec` into database objects is
`xen.sim.build`'s job.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xen.sim.registry import Fault, Timing

GIB = 1024**3
MIB = 1024**2
DEFAULT_LAB = Path(__file__).with_name("default_lab.toml")

# CPU feature masks (xen/sim/cpuid.py: a live VM may move to a host whose features are a
# superset of the ones it last booted with).
FULL_FEATURES = "1fcbfbff-f7fa3223-2d93fbff-00000023-00000001-000007ab-00000000-00000000-00001000-ac000400-00000000-00000000"


UPDATE_KEYS_NEEDED = frozenset({"name", "version", "release"})


class LabError(ValueError):
    """The lab file is inconsistent (unknown key, missing host, unknown SR ...)."""


@dataclass(slots=True)
class CpuSpec:
    name: str
    vendor: str = "GenuineIntel"
    model_name: str = "Intel(R) Xeon(R) Gold 6430"
    family: str = "6"
    model: str = "143"
    speed_mhz: str = "2100.000"
    features: str = FULL_FEATURES


@dataclass(slots=True)
class HostSpec:
    name: str
    address: str
    master: bool = False
    memory_gib: float = 64.0
    cpu: str = "default"
    cpu_count: int = 32
    enabled: bool = True
    live: bool = True
    dom0_memory_gib: float = 2.0
    # Software versions (software_version / API_version_*): a destination older than the
    # source refuses migrations (NOT_SUPPORTED_DURING_UPGRADE within a pool,
    # VM_HOST_INCOMPATIBLE_VERSION_MIGRATE across pools).
    product_version: str = "8.3.0"
    platform_version: str = "3.4.0"
    api_version_minor: int = 21
    # Packages the XCP-ng updater plugin reports as available (`host.call_plugin` updater.py
    # check_update), each a table with the plugin's keys: name, version, release, description,
    # changelog ({date, author, description} or absent), url, size, license.
    updates: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class SrSpec:
    name: str
    type: str = "ext"
    shared: bool = False
    host: str = ""  # for local SRs: the one host with a PBD
    size_gib: float = 1024.0
    content_type: str = "user"
    isos: list[str] = field(default_factory=list)  # ISO VDIs on an ISO SR
    # False: the SR's driver lacks VDI_MIRROR, so storage migration of a disk to or from it
    # gives SR_DOES_NOT_SUPPORT_MIGRATION (ISO SRs never have it). One SM driver per type:
    # every SR of a type must agree.
    mirror: bool = True


@dataclass(slots=True)
class NetworkSpec:
    name: str
    bridge: str = ""
    device: str = ""  # PIF device name on every host, e.g. "eth0"
    management: bool = False  # PIF IP = host address
    ips: dict[str, str] = field(default_factory=dict)  # host name -> PIF IP (others)
    mtu: int = 1500
    speed_mbit: int = 10000  # link speed of its NICs (PIF_metrics.speed)


@dataclass(slots=True)
class DiskSpec:
    sr: str
    size_gib: float = 10.0
    used_gib: float | None = None  # allocated (physical_utilisation); default = size
    name: str = ""
    cbt: bool = False
    mode: str = "RW"


@dataclass(slots=True)
class VmSpec:
    name: str
    host: str = ""  # resident host when running; affinity otherwise
    power_state: str = "Halted"
    memory_gib: float = 2.0
    memory_min_gib: float | None = None  # memory_dynamic_min; default = memory_gib
    vcpus: int = 2
    template: bool = False
    pv_drivers: bool | None = None  # default: True for running VMs
    os: str = "Debian GNU/Linux 12"
    # A running VM booted with its pool's levelled CPU features (the intersection of its
    # hosts', xen/sim/cpuid.py), so it may move to any host of its pool. Naming a CPU profile
    # here models a VM that booted with that profile's features instead: one that booted
    # before a less capable host joined its pool, which that host refuses.
    boot_cpu: str = ""
    firmware: str = "bios"  # "bios" | "uefi" (HVM_boot_params firmware)
    secure_boot: bool = False  # platform secureboot (UEFI only)
    # Secure boot variables set in its NVRAM (PK, KEK, db, dbx): VM.get_secureboot_readiness
    # says first_boot without any, setup_mode without PK, ready_no_dbx without dbx ...
    efi_vars: list[str] = field(default_factory=list)
    blocked_operations: dict[str, str] = field(default_factory=dict)
    other_config: dict[str, str] = field(default_factory=dict)
    platform: dict[str, str] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)  # one VIF each; default: management
    disks: list[DiskSpec] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    cd: str | None = None  # None: no CD drive; "": empty drive; else an ISO VDI name
    description: str = ""


@dataclass(slots=True)
class PoolSpec:
    name: str
    username: str = "root"
    password: str = "password"
    default_sr: str = ""
    hosts: list[HostSpec] = field(default_factory=list)
    srs: list[SrSpec] = field(default_factory=list)
    networks: list[NetworkSpec] = field(default_factory=list)
    vms: list[VmSpec] = field(default_factory=list)
    other_config: dict[str, str] = field(default_factory=dict)

    @property
    def master(self) -> HostSpec:
        for host in self.hosts:
            if host.master:
                return host
        return self.hosts[0]


@dataclass(slots=True)
class Lab:
    pools: list[PoolSpec]
    cpus: dict[str, CpuSpec] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    faults: list[Fault] = field(default_factory=list)
    # Real seconds an event.from waits to batch changes (xapi: 50 ms).
    event_batch_delay_s: float = 0.05
    source: str = "<generated>"
    https: bool = False  # [server] https: hosts serve TLS with self-signed certificates
    # [server] seed: the same uuids and refs at every start (xen/sim/ids.py); None = random.
    seed: int | None = None


# -- parsing --------------------------------------------------------------------------------


def _build(cls: type, raw: dict[str, Any], where: str, **extra: Any) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise LabError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return cls(**raw, **extra)
    except TypeError as exc:
        raise LabError(f"{where}: {exc}") from None


def parse_lab(doc: dict[str, Any], source: str = "<dict>") -> Lab:
    doc = dict(doc)
    creds = doc.pop("credentials", {})
    cpus = {"default": CpuSpec("default")}
    for name, raw in doc.pop("cpus", {}).items():
        cpus[name] = _build(CpuSpec, {"name": name, **raw}, f"cpus.{name}")
    timing = _build(Timing, doc.pop("timing", {}), "timing")
    faults = [_build(Fault, f, f"faults[{i}]") for i, f in enumerate(doc.pop("faults", []))]
    batch = float(doc.pop("event_batch_delay_s", 0.05))
    server = dict(doc.pop("server", {}))
    https = server.pop("https", False)
    seed = server.pop("seed", None)
    if server:
        raise LabError(f"server: unknown keys {sorted(server)}")
    if not isinstance(https, bool):
        raise LabError("server.https: must be true or false")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise LabError("server.seed: must be an integer")
    pools = []
    for i, raw in enumerate(doc.pop("pools", [])):
        pools.append(_parse_pool(dict(raw), creds, f"pools[{i}]"))
    if doc:
        raise LabError(f"{source}: unknown top-level keys {sorted(doc)}")
    lab = Lab(pools, cpus, timing, faults, batch, source, https, seed)
    validate(lab)
    return lab


def _parse_pool(raw: dict[str, Any], creds: dict[str, str], where: str) -> PoolSpec:
    hosts = [_build(HostSpec, h, f"{where}.hosts") for h in raw.pop("hosts", [])]
    srs = [_build(SrSpec, s, f"{where}.srs") for s in raw.pop("srs", [])]
    nets = [_build(NetworkSpec, n, f"{where}.networks") for n in raw.pop("networks", [])]
    vms = []
    for v in raw.pop("vms", []):
        v = dict(v)
        disks = [_build(DiskSpec, d, f"{where}.vms.disks") for d in v.pop("disks", [])]
        vms.append(_build(VmSpec, v, f"{where}.vms", disks=disks))
    raw.setdefault("username", creds.get("username", "root"))
    raw.setdefault("password", creds.get("password", "password"))
    return _build(PoolSpec, raw, where, hosts=hosts, srs=srs, networks=nets, vms=vms)


def validate(lab: Lab) -> None:
    addresses: set[str] = set()
    for pool in lab.pools:
        if not pool.hosts:
            raise LabError(f"pool {pool.name!r} has no hosts")
        hosts = {h.name for h in pool.hosts}
        for h in pool.hosts:
            if h.address in addresses:
                raise LabError(f"address {h.address} used twice")
            addresses.add(h.address)
            if h.cpu not in lab.cpus:
                raise LabError(f"host {h.name!r}: unknown cpu {h.cpu!r}")
            for update in h.updates:
                if not isinstance(update, dict) or not UPDATE_KEYS_NEEDED <= set(update):
                    raise LabError(
                        f"host {h.name!r}: each update needs {sorted(UPDATE_KEYS_NEEDED)}"
                    )
        srs = {s.name: s for s in pool.srs}
        mirror_by_type: dict[str, bool] = {}
        for s in pool.srs:
            if not s.shared and s.host not in hosts:
                raise LabError(f"local SR {s.name!r} needs a host of its pool")
            if mirror_by_type.setdefault(s.type, s.mirror) != s.mirror:
                raise LabError(f"SRs of type {s.type!r} disagree on `mirror` (one SM per type)")
        if pool.default_sr and pool.default_sr not in srs:
            raise LabError(f"pool {pool.name!r}: unknown default_sr {pool.default_sr!r}")
        nets = {n.name for n in pool.networks}
        if not any(n.management for n in pool.networks):
            raise LabError(f"pool {pool.name!r} needs a management network")
        for vm in pool.vms:
            if vm.power_state == "Running" and vm.host not in hosts:
                raise LabError(f"running VM {vm.name!r} needs a host of its pool")
            if vm.host and vm.host not in hosts:
                raise LabError(f"VM {vm.name!r}: unknown host {vm.host!r}")
            if vm.boot_cpu and vm.boot_cpu not in lab.cpus:
                raise LabError(f"VM {vm.name!r}: unknown boot_cpu {vm.boot_cpu!r}")
            if vm.firmware not in ("bios", "uefi"):
                raise LabError(f"VM {vm.name!r}: firmware must be 'bios' or 'uefi'")
            if vm.secure_boot and vm.firmware != "uefi":
                raise LabError(f"VM {vm.name!r}: secure_boot needs firmware = 'uefi'")
            for d in vm.disks:
                if d.sr not in srs:
                    raise LabError(f"VM {vm.name!r}: unknown SR {d.sr!r}")
            for n in vm.networks:
                if n not in nets:
                    raise LabError(f"VM {vm.name!r}: unknown network {n!r}")


def load_lab(path: str | Path | None = None) -> Lab:
    """The shipped default lab, or the lab file at `path`."""
    p = Path(path) if path is not None else DEFAULT_LAB
    with p.open("rb") as fh:
        doc = tomllib.load(fh)
    return parse_lab(doc, str(p))


# -- generated labs (scale tests) -------------------------------------------------------------


def generate_lab(
    n_vms: int, n_pools: int = 1, *, hosts_per_pool: int = 4, time_scale: float = 0.01
) -> Lab:
    """A synthetic lab: `n_pools` pools of `hosts_per_pool` hosts (127.0.{50+p}.{h}), one
    shared SR, a local SR per host, `n_vms` running VMs spread over the pools and hosts."""
    pools: list[PoolSpec] = []
    per_host = -(-n_vms // (n_pools * hosts_per_pool))
    host_gib = max(256.0, per_host * 1.25 + 8)
    for p in range(n_pools):
        name = f"Gen {p + 1}"
        hosts = [
            HostSpec(
                f"g{p + 1}h{h + 1}", f"127.0.{50 + p}.{h + 1}", master=h == 0, memory_gib=host_gib
            )
            for h in range(hosts_per_pool)
        ]
        srs = [SrSpec(f"{name} shared", "nfs", shared=True, size_gib=1024 * 64)]
        srs += [SrSpec(f"{name} local {h.name}", "ext", host=h.name) for h in hosts]
        nets = [
            NetworkSpec(f"{name} management", "xenbr0", "eth0", management=True),
            NetworkSpec(
                f"{name} migration",
                "xenbr1",
                "eth1",
                ips={h.name: f"127.0.{150 + p}.{i + 1}" for i, h in enumerate(hosts)},
            ),
        ]
        pools.append(
            PoolSpec(name, hosts=hosts, srs=srs, networks=nets, default_sr=f"{name} shared")
        )
    for i in range(n_vms):
        pool = pools[i % n_pools]
        host = pool.hosts[(i // n_pools) % hosts_per_pool]
        pool.vms.append(
            VmSpec(
                f"vm-{i:05d}",
                host=host.name,
                power_state="Running",
                memory_gib=1,
                vcpus=1,
                disks=[DiskSpec(f"{pool.name} shared", size_gib=10, used_gib=2)],
            )
        )
    lab = Lab(pools, {"default": CpuSpec("default")}, Timing(time_scale=time_scale))
    validate(lab)
    return lab
