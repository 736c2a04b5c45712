"""The lab's load model: the data sources of a host's and a VM's RRD, and their values.

Data source names and units are xcp-rrdd's (as xo-server's xapi-stats.mjs reads them):

- host: `cpu<N>` and `cpu_avg` (busy fraction 0..1), `loadavg`, `memory_total_kib` and
  `memory_free_kib` (KiB), `pif_<device>_rx/tx` (bytes/s);
- VM: `cpu<N>` (one per vCPU), `memory` and `memory_target` (bytes), `memory_internal_free`
  (KiB, what the guest reports free), `vif_<device>_rx/tx` (bytes/s),
  `vbd_<device>_read/write` (bytes/s) and `vbd_<device>_iops_read/write`.

Values are a deterministic function of the object, the data source and time: a slow wave
plus a little noise around a per-object level, so consecutive rows differ and two requests
agree on the past. Memory figures follow the records (VM_metrics, host_metrics); the hosts'
NICs add the traffic of the migrations that went through them (activity.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xen.sim.db import Database
from xen.sim.rrd.activity import ActivityLog, average_rate

PDP_S = 5  # xcp-rrdd's sampling period

Sampler = Callable[[float, int], float]  # (end of the interval, its length in s) -> average


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    sample: Sampler
    kind: str = "GAUGE"  # the RRD data source type: GAUGE, or DERIVE for counters' rates
    minimum: float = 0.0
    maximum: float = math.inf


def _key(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest())


def _unit(key: int, bucket: int) -> float:
    """A pseudo-random number in [0, 1) for one object, source and time bucket."""
    x = (key ^ (bucket * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return ((x ^ (x >> 31)) & 0xFFFFFFFFFFFF) / float(1 << 48)


def _level(key: int) -> float:
    return _unit(key, -1)


def wavy(key: int, low: float, high: float, jitter: float = 0.15) -> Sampler:
    """Between `low` and `high`: a wave of 5 to 20 minutes, plus noise that averages out
    over longer intervals."""
    period = 300.0 + 900.0 * _unit(key, -2)
    phase = 2 * math.pi * _unit(key, -3)
    span = high - low

    def sample(end: float, step: int) -> float:
        middle = end - step / 2
        wave = 0.5 + 0.5 * math.sin(2 * math.pi * middle / period + phase)
        if step > period:
            wave = 0.5  # a long interval averages the wave out
        noise = (_unit(key, int(end // step)) - 0.5) * jitter * math.sqrt(PDP_S / step)
        return low + span * min(1.0, max(0.0, wave * (1 - jitter) + jitter / 2 + noise))

    return sample


def constant(value: float) -> Sampler:
    return lambda end, step: value


def _vm_sources(db: Database, vm: str) -> list[Source]:
    rec = db.get("VM", vm)
    uuid = str(rec["uuid"])
    metrics = (
        db.get("VM_metrics", rec["metrics"]) if db.exists("VM_metrics", rec["metrics"]) else {}
    )
    memory = float(metrics.get("memory_actual") or rec["memory_target"] or rec["memory_static_max"])
    vcpus = int(metrics.get("VCPUs_number") or rec["VCPUs_at_startup"] or 1)
    busy = 0.02 + 0.25 * _level(_key(uuid, "busy"))
    sources = [
        Source(f"cpu{n}", wavy(_key(uuid, f"cpu{n}"), busy / 3, busy * 2), maximum=1.0)
        for n in range(vcpus)
    ]
    free_low = memory / 1024 * (0.2 + 0.3 * _level(_key(uuid, "free")))
    sources += [
        Source("memory", constant(memory)),
        Source("memory_target", constant(float(rec["memory_target"]))),
        Source("memory_internal_free", wavy(_key(uuid, "free"), free_low, free_low * 1.4)),
    ]
    if rec["is_control_domain"]:
        return sources
    net = 2e3 + 2e5 * _level(_key(uuid, "net"))
    for vif in rec["VIFs"]:
        device = db.get("VIF", vif)["device"]
        for way, share in (("rx", 1.0), ("tx", 0.6)):
            name = f"vif_{device}_{way}"
            sources.append(Source(name, wavy(_key(uuid, name), 0, net * share), "DERIVE"))
    disk = 1e4 + 2e6 * _level(_key(uuid, "disk"))
    for vbd in rec["VBDs"]:
        vbd_rec = db.get("VBD", vbd)
        if not vbd_rec["device"] or vbd_rec["empty"]:
            continue
        for way, share in (("read", 1.0), ("write", 0.5)):
            name = f"vbd_{vbd_rec['device']}_{way}"
            rate = wavy(_key(uuid, name), 0, disk * share)
            sources.append(Source(name, rate, "DERIVE"))
            sources.append(
                Source(f"vbd_{vbd_rec['device']}_iops_{way}", _per_block(rate), "DERIVE")
            )
    return sources


def _per_block(rate: Sampler) -> Sampler:
    return lambda end, step: rate(end, step) / 4096


def _host_sources(db: Database, activity: ActivityLog, host: str) -> list[Source]:
    rec = db.get("host", host)
    uuid = str(rec["uuid"])
    cpus = int(rec["cpu_info"].get("cpu_count", "1") or 1)
    resident = [v for v in rec["resident_VMs"] if db.exists("VM", v)]
    busy = 0.02 + min(0.6, 0.04 * len(resident))
    per_cpu = [wavy(_key(uuid, f"cpu{n}"), busy / 2, busy * 1.5) for n in range(cpus)]
    # Around the CPUs' common level (averaging 32 samples per row would cost 32 times more).
    cpu_avg = wavy(_key(uuid, "cpu_avg"), busy * 0.8, busy * 1.2, jitter=0.05)

    metrics: dict[str, Any] = (
        db.get("host_metrics", rec["metrics"]) if db.exists("host_metrics", rec["metrics"]) else {}
    )
    total = float(metrics.get("memory_total", 0)) / 1024
    free = float(metrics.get("memory_free", 0)) / 1024
    sources = [Source(f"cpu{n}", cpu, maximum=1.0) for n, cpu in enumerate(per_cpu)]
    sources += [
        Source("cpu_avg", cpu_avg, maximum=1.0),
        Source("loadavg", lambda end, step: cpu_avg(end, step) * cpus / 4),
        Source("memory_total_kib", constant(total)),
        Source("memory_free_kib", constant(free)),
    ]
    for pif in rec["PIFs"]:
        device = db.get("PIF", pif)["device"]
        for way in ("rx", "tx"):
            name = f"pif_{device}_{way}"
            background = wavy(_key(uuid, name), 1e3, 5e4)
            rate = _with_traffic(background, activity.windows(host, device, way))
            sources.append(Source(name, rate, "DERIVE"))
    return sources


def _with_traffic(background: Sampler, windows: list[Any]) -> Sampler:
    if not windows:
        return background
    return lambda end, step: background(end, step) + average_rate(windows, end - step, end)


@dataclass(frozen=True, slots=True)
class Owner:
    """One RRD: its legend prefix ("host:<uuid>:" / "vm:<uuid>:") and data sources."""

    prefix: str
    sources: list[Source]


def host_rrd(db: Database, activity: ActivityLog, host: str) -> Owner:
    return Owner(f"host:{db.get('host', host)['uuid']}:", _host_sources(db, activity, host))


def vm_rrd(db: Database, vm: str) -> Owner:
    return Owner(f"vm:{db.get('VM', vm)['uuid']}:", _vm_sources(db, vm))


def resident_vms(db: Database, host: str) -> list[str]:
    """The VMs whose RRDs this host's rrdd holds: the ones running there, dom0 included."""
    return [
        vm
        for vm in db.get("host", host)["resident_VMs"]
        if db.exists("VM", vm) and db.get("VM", vm)["power_state"] in ("Running", "Paused")
    ]
