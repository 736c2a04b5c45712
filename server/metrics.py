"""Prometheus metrics: one registry per server, fed by small hooks, read at scrape time.

Nothing else in the server calls prometheus_client. What is counted comes from three places:
- the live collection (a store subscriber): every `migration` object seen for the first time
  counts as started, and its first terminal status as finished, with its duration, bytes and
  XAPI error code; the running and queued ones are counted per source pool at scrape time;
- the XAPI observer of the pool connections (`xen.pool.CallObserver`, set through the
  connection options this module gives the pool manager): calls, errors and latency by pool
  and method;
- the services' own state, read at each scrape by `_StateCollector`: pool connection status,
  WebSocket connections, push subscribers and drops, objects in the collection.

The event-loop lag sampler (server/loop_lag.py) feeds a histogram here too. HTTP exposure
(`GET /metrics`, its authentication, the optional open listener) is server/metrics_http.py.

Modes, as an operator names them: `xenmotion` (pool_migrate: only RAM moves),
`storage_motion` (migrate_send inside a pool) and `cross_pool` (migrate_send to another pool).
A XenMotion that falls back to storage motion (VM_REQUIRES_SR) is started as `xenmotion` and
finishes as `storage_motion`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xen.pool import ConnectionOptions
from xen.store import ChangeSet

if TYPE_CHECKING:
    from server.state import ServerState

TERMINAL = frozenset({"success", "failure", "cancelled", "interrupted"})
POOL_STATES = ("connected", "connecting", "disconnected")

_GIB = 1024**3
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
BYTES_BUCKETS = tuple(float(_GIB * 4**k / 16) for k in range(9))  # 64 MiB ... 4 TiB
XAPI_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def mode_of(migration: dict[str, Any]) -> str:
    if migration.get("mode") == "pool_migrate":
        return "xenmotion"
    return "cross_pool" if migration.get("crossPool") else "storage_motion"


@dataclass(slots=True)
class _Seen:
    status: str
    pool: str


class ServerMetrics:
    def __init__(self, state: ServerState) -> None:
        # No `_created` series: they double the output and no dashboard here reads them.
        disable_created_metrics()
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.started = Counter(
            "xo_migrate_migrations_started",
            "Migrations started (seen queued or running for the first time), by mode",
            ["mode"],
            registry=r,
        )
        self.finished = Counter(
            "xo_migrate_migrations_finished",
            "Migrations finished, by mode and outcome (success, failure, cancelled, interrupted)",
            ["mode", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "xo_migrate_migration_failures",
            "Failed migrations by mode and XAPI error code",
            ["mode", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "xo_migrate_migration_duration_seconds",
            "Duration of finished migrations (start to end, queue excluded), by mode and outcome",
            ["mode", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.bytes = Histogram(
            "xo_migrate_migration_bytes",
            "Bytes to move (disks and memory) of successful migrations, by mode",
            ["mode"],
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        self.xapi_calls = Counter(
            "xo_migrate_xapi_calls", "XAPI calls by pool and method", ["pool", "method"], registry=r
        )
        self.xapi_errors = Counter(
            "xo_migrate_xapi_call_errors",
            "Failed XAPI calls by pool, method and error (XAPI code or transport error class)",
            ["pool", "method", "code"],
            registry=r,
        )
        self.xapi_latency = Histogram(
            "xo_migrate_xapi_call_duration_seconds",
            "XAPI call latency by pool and method (event.from is a long-poll)",
            ["pool", "method"],
            buckets=XAPI_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "xo_migrate_event_loop_lag_seconds",
            "How late the event loop woke a periodic sampler up",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(_StateCollector(self))
        self._live: dict[str, _Seen] = {}
        self.listen_port: int | None = None  # the open listener's port, once it listens
        self._unsubscribe = state.store.subscribe(self._on_changes)

    def close(self) -> None:
        self._unsubscribe()

    def pool_options(self) -> ConnectionOptions:
        """Connection options for the pool manager: every XAPI call is observed."""
        return ConnectionOptions(observer=self.observe_xapi_call)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything."""
        return generate_latest(self.registry)

    # -- hooks -----------------------------------------------------------------------------

    def observe_xapi_call(self, pool: str, method: str, seconds: float, error: str | None) -> None:
        self.xapi_calls.labels(pool, method).inc()
        self.xapi_latency.labels(pool, method).observe(seconds)
        if error is not None:
            self.xapi_errors.labels(pool, method, error).inc()

    def _on_changes(self, changes: ChangeSet) -> None:
        live = self._live
        for obj_id in changes.exit:
            live.pop(obj_id, None)
        for obj in changes.enter.values():
            if obj.get("type") != "migration":
                continue
            status = obj.get("status", "")
            seen = live.get(obj["id"])
            if seen is None:
                self.started.labels(mode_of(obj)).inc()
            if status in TERMINAL and (seen is None or seen.status not in TERMINAL):
                self._finished(obj, status)
            live[obj["id"]] = _Seen(status, str(obj.get("sourcePool") or ""))

    def _finished(self, obj: dict[str, Any], outcome: str) -> None:
        mode = mode_of(obj)
        self.finished.labels(mode, outcome).inc()
        duration = obj.get("duration")
        if isinstance(duration, int | float):
            self.duration.labels(mode, outcome).observe(max(0.0, float(duration)))
        if outcome == "success":
            self.bytes.labels(mode).observe(float(obj.get("bytesTotal") or 0))
        elif outcome == "failure":
            code = (obj.get("error") or {}).get("code") or "UNKNOWN"
            self.failures.labels(mode, str(code)).inc()

    def live_counts(self) -> dict[str, dict[str, int]]:
        """{pool uuid: {"running": n, "queued": n}} of the migrations in the collection."""
        counts: dict[str, dict[str, int]] = {}
        for seen in self._live.values():
            if seen.status in ("running", "queued"):
                per_pool = counts.setdefault(seen.pool, {"running": 0, "queued": 0})
                per_pool[seen.status] += 1
        return counts


class _StateCollector(Collector):
    """Gauges read from the services at scrape time (no bookkeeping between scrapes)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        state = self.metrics.state
        store = state.store
        yield from self._migrations(state)
        yield from self._pools(state)
        ws = GaugeMetricFamily("xo_migrate_websocket_connections", "Open API WebSockets")
        ws.add_metric([], len(state.connections))
        yield ws
        subscribers = GaugeMetricFamily(
            "xo_migrate_push_subscribers", "Signed-in WebSockets receiving `all` notifications"
        )
        subscribers.add_metric([], len(state.push))
        yield subscribers
        drops = CounterMetricFamily(
            "xo_migrate_push_drops",
            "WebSockets disconnected because their notification backlog overflowed",
        )
        drops.add_metric([], state.push.dropped)
        yield drops
        objects = GaugeMetricFamily("xo_migrate_objects", "Objects in the live collection")
        objects.add_metric([], len(store))
        yield objects

    def _migrations(self, state: ServerState) -> Iterator[Metric]:
        counts = self.metrics.live_counts()
        for pool in state.store.by_type("pool"):  # every known pool, even with nothing moving
            counts.setdefault(pool["id"], {"running": 0, "queued": 0})
        running = GaugeMetricFamily(
            "xo_migrate_migrations_running",
            "Migrations running, by source pool",
            labels=["pool", "pool_name"],
        )
        queued = GaugeMetricFamily(
            "xo_migrate_migrations_queued",
            "Storage migrations waiting in the queue, by source pool",
            labels=["pool", "pool_name"],
        )
        for pool_id, count in sorted(counts.items()):
            name = str((state.store.get(pool_id) or {}).get("name_label") or pool_id)
            running.add_metric([pool_id, name], count["running"])
            queued.add_metric([pool_id, name], count["queued"])
        yield running
        yield queued

    def _pools(self, state: ServerState) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "xo_migrate_pool_connected",
            "1 while the pool connection is up with a complete cache, else 0",
            labels=["server", "pool"],
        )
        by_state = GaugeMetricFamily(
            "xo_migrate_pool_state",
            "The pool connection's state (1 for the current one)",
            labels=["server", "pool", "state"],
        )
        statuses = state.pools.statuses() if state.pools is not None else []
        for entry in statuses:
            label = str(entry.get("label") or entry.get("host") or entry["id"])
            status = entry.get("status", "disconnected")
            connected.add_metric([entry["id"], label], 1 if status == "connected" else 0)
            for name in POOL_STATES:
                by_state.add_metric([entry["id"], label, name], 1 if status == name else 0)
        yield connected
        yield by_state
