"""Host and VM statistics as xo-server's xapi-stats.mjs computes them (`host.stats`, `vm.stats`).

How: ask the host for its clock (`host.get_servertime`), then GET
`/rrd_updates?cf=AVERAGE&host=true&interval=<step>&json=true&start=<clock - step*(points-1)>` on
the host that runs the object (it answers for itself and every VM it runs). One download per
host and granularity is reused while it is less than one step (and at most a minute) old, for
all the objects of that host. The legend entries `AVERAGE:<host|vm>:<uuid>:<data source>` of
the object asked for are mapped by the METRICS table below to xo-server's paths, rows oldest
first:

    {"endTimestamp": <meta.end>, "interval": <step>, "stats": {"cpus": {"0": [..]}, ...}}

Granularities: seconds (5 s rows, 120 of them), minutes (60 s, 120), hours (3600 s, 168), days
(86400 s, 366); anything else is FaultyGranularity, as is a host answering another step. NaN
becomes null; a transformed null becomes 0 (JavaScript's `null * 1024`), as in xo-server.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from xen.wire import datetime_to_seconds

STEP_BY_GRANULARITY = {"seconds": 5, "minutes": 60, "hours": 3600, "days": 86400}
POINTS_BY_STEP = {5: 120, 60: 120, 3600: 168, 86400: 366}
MAX_DOWNLOAD_REUSE_S = 60
_LEGEND = re.compile(r"^AVERAGE:([^:]+):(.+):(.+)$")


class FaultyGranularity(Exception):
    """An unknown granularity, or a host that answered with another step."""


class StatsConnection(Protocol):
    """What this module needs of a pool connection (xen/pool.py)."""

    async def call(self, method: str, *args: Any) -> Any: ...

    async def get_on_host(self, address: str, path: str, query: dict[str, str]) -> bytes: ...

    @property
    def memo(self) -> Any: ...


Transform = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class Metric:
    """A data source name pattern and where its values go (`{}` is the pattern's group)."""

    pattern: re.Pattern[str]
    path: tuple[str, ...]
    transform: Transform | None = None

    def match(self, name: str) -> tuple[str, ...] | None:
        found = self.pattern.match(name)
        if found is None:
            return None
        group = found.group(1) if found.groups() else ""
        return tuple(group if part == "{}" else part for part in self.path)


def _m(pattern: str, *path: str, transform: Transform | None = None) -> Metric:
    return Metric(re.compile(pattern), path, transform)


def _kib(v: float) -> float:
    return v * 1024


def _percent(v: float) -> float:
    return v * 1e2


def _mib(v: float) -> float:
    return v * 2**20


def _ms(v: float) -> float:
    return v / 1e3


# In xo-server's order: the first metric whose pattern matches a data source wins.
METRICS: dict[str, tuple[Metric, ...]] = {
    "host": (
        _m(r"^loadavg$", "load"),
        _m(r"^memory_free_kib$", "memoryFree", transform=_kib),
        _m(r"^memory_total_kib$", "memory", transform=_kib),
        _m(r"^cpu(\d+)$", "cpus", "{}", transform=_percent),
        _m(r"^pif_eth(\d+)_rx$", "pifs", "rx", "{}"),
        _m(r"^pif_eth(\d+)_tx$", "pifs", "tx", "{}"),
        _m(r"^iops_read_(\w+)$", "iops", "r", "{}"),
        _m(r"^iops_write_(\w+)$", "iops", "w", "{}"),
        _m(r"^io_throughput_read_(\w+)$", "ioThroughput", "r", "{}", transform=_mib),
        _m(r"^io_throughput_write_(\w+)$", "ioThroughput", "w", "{}", transform=_mib),
        _m(r"^read_latency_(\w+)$", "latency", "r", "{}", transform=_ms),
        _m(r"^write_latency_(\w+)$", "latency", "w", "{}", transform=_ms),
        _m(r"^iowait_(\w+)$", "iowait", "{}"),
    ),
    "vm": (
        _m(r"^memory_internal_free$", "memoryFree", transform=_kib),
        _m(r"^.*memory$", "memory"),
        _m(r"^cpu(\d+)$", "cpus", "{}", transform=_percent),
        _m(r"^vif_(\d+)_rx$", "vifs", "rx", "{}"),
        _m(r"^vif_(\d+)_tx$", "vifs", "tx", "{}"),
        _m(r"^vbd_xvd(.)_read$", "xvds", "r", "{}"),
        _m(r"^vbd_xvd(.)_write$", "xvds", "w", "{}"),
        _m(r"^vbd_xvd(.)_iops_read$", "iops", "r", "{}"),
        _m(r"^vbd_xvd(.)_iops_write$", "iops", "w", "{}"),
    ),
}


def step_of(granularity: str | None) -> int:
    if granularity is None:
        return STEP_BY_GRANULARITY["seconds"]
    step = STEP_BY_GRANULARITY.get(granularity)
    if step is None:
        raise FaultyGranularity(
            f"Unknown granularity: '{granularity}'. Use 'seconds', 'minutes', 'hours', or 'days'."
        )
    return step


async def object_stats(
    conn: StatsConnection, host: dict[str, Any], uuid: str, granularity: str | None
) -> dict[str, Any]:
    """The stats of the object `uuid` (the host itself or a VM it runs), from `host`."""
    step = step_of(granularity)
    server_time = datetime_to_seconds(await conn.call("host.get_servertime", host["_xapiRef"]))
    now = server_time or 0
    start = now - step * POINTS_BY_STEP[step] + step  # one step less: not across the boundary

    async def download() -> dict[str, Any]:
        body = await conn.get_on_host(
            host["address"],
            "/rrd_updates",
            {
                "cf": "AVERAGE",
                "host": "true",
                "interval": str(step),
                "json": "true",
                "start": str(start),
            },
        )
        return parse_rrd_updates(body)

    # xo-server reuses a download for one step; a minute at most here: hourly and daily rows
    # change slowly, and a day-long download should not be held for a day.
    ttl = min(step, MAX_DOWNLOAD_REUSE_S)
    rrd = await conn.memo.get(("rrd_updates", host["uuid"], step), ttl, download)
    return extract(rrd, uuid, step, now)


def extract(rrd: dict[str, Any], uuid: str, step: int, now: int) -> dict[str, Any]:
    """xo-server's answer for one object of a parsed `/rrd_updates` download."""
    meta = rrd.get("meta") or {}
    actual_step = _number(meta.get("step"))
    if actual_step != step:
        raise FaultyGranularity(f"Unable to get the true granularity: {_js(actual_step)}")
    rows = list(reversed(rrd.get("data") or []))  # the host sends the newest first
    stats: dict[str, Any] = {}
    found = False
    for index, legend in enumerate(meta.get("legend") or []):
        parsed = _LEGEND.match(legend) if isinstance(legend, str) else None
        if parsed is None:
            continue
        kind, owner, source = parsed.groups()
        metrics = METRICS.get(kind)
        if metrics is None or owner != uuid:
            continue
        for metric in metrics:
            path = metric.match(source)
            if path is None:
                continue
            found = True
            node = stats
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = [_value(row, index, metric.transform) for row in rows]
            break
    if not found:
        return {"endTimestamp": now, "interval": step, "stats": {}}
    return {"endTimestamp": _number(meta.get("end")), "interval": actual_step, "stats": stats}


def _value(row: Any, index: int, transform: Transform | None) -> float | None:
    values = row.get("values") if isinstance(row, dict) else None
    raw = values[index] if isinstance(values, list) and index < len(values) else None
    value = _number(raw)
    if value is not None and math.isnan(value):
        value = None
    if transform is None:
        return value
    return transform(0.0 if value is None else value)  # JavaScript: null * 1024 === 0


def _number(value: Any) -> Any:
    """XAPI >= 23.31 writes the numbers of its JSON as strings: read both."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _js(value: Any) -> str:
    return "undefined" if value is None else str(value)


_BARE_KEY = re.compile(rb"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:")


def parse_rrd_updates(body: bytes) -> dict[str, Any]:
    """`/rrd_updates?json=true`: JSON, or the JSON5 older XAPIs send (bare keys, NaN)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = _BARE_KEY.sub(rb'\1"\2":', body).decode("utf-8", "replace")
        parsed = json.loads(text)  # the standard parser takes NaN and Infinity
    if not isinstance(parsed, dict):
        raise ValueError("/rrd_updates: not a JSON object")
    return parsed
