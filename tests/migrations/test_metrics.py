"""GET /metrics, parsed with prometheus_client's own parser, after migrations of each mode and
a failure; who may read it (an admin's token on the API port, anyone on the metrics address)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.config import ConfigError, parse_config
from server.metrics_http import METRICS
from server.metrics_settings import MetricsSettings
from server.migrations.service import MigrationSettings
from tests.helpers import wait_until
from tests.migrations.conftest import Lab, lab_on
from tests.migrations.helpers import start_one_running_one_queued
from xen.sim import Simulator

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def lab(
    tmp_path: Path, sim: Simulator, migration_settings: MigrationSettings
) -> AsyncIterator[Lab]:
    metrics = MetricsSettings(listen=("127.0.0.1", 0), lag_interval_s=0.05)
    async with lab_on(sim, tmp_path, migration_settings, metrics=metrics) as running:
        yield running


async def get(url: str, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:
        return response.status, await response.text()


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels; 0 when absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the samples that have at least these labels."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(lab: Lab) -> Samples:
    port = lab.server.app[METRICS].listen_port
    status, text = await get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return parse(text)


async def test_only_admins_read_metrics_on_the_api_port_anyone_on_the_metrics_address(
    lab: Lab,
) -> None:
    url = f"{lab.server.base}/metrics"
    assert (await get(url))[0] == 401
    assert (await get(url, headers={"Authorization": "Bearer nope"}))[0] == 401
    token = await lab.client.call("token.create")
    status, text = await get(url, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and "xo_migrate_migrations_started" in text
    assert (await get(url, cookies={"authenticationToken": token}))[0] == 200
    await lab.client.call(
        "user.create", {"email": "ops@example.net", "password": "ops", "permission": "none"}
    )
    ops = await lab.connect()
    await ops.sign_in("ops@example.net", "ops")
    ops_token = await ops.call("token.create")
    assert (await get(url, headers={"Authorization": f"Bearer {ops_token}"}))[0] == 403
    port = lab.server.app[METRICS].listen_port
    status, text = await get(f"http://127.0.0.1:{port}/metrics")  # no credentials
    assert status == 200 and "xo_migrate_pool_connected" in text
    assert (await get(f"http://127.0.0.1:{port}/api/"))[0] == 404  # nothing else there


async def test_counters_and_histograms_after_each_mode_and_a_failure(lab: Lab) -> None:
    before = await scrape(lab)
    a2, a3, b1, b2 = [await lab.id_of("host", h) for h in ("a2", "a3", "b1", "b2")]
    await lab.migrate("vm.migrate", {"vm": await lab.id_of("VM", "web-01"), "targetHost": a2})
    shared = await lab.id_of("SR", "A shared NFS")
    await lab.migrate(
        "vm.migrate", {"vm": await lab.id_of("VM", "app-01"), "targetHost": a3, "sr": shared}
    )
    await lab.migrate("vm.migrate", {"vm": await lab.id_of("VM", "db-01"), "targetHost": b1})
    error = await lab.error_of(
        "vm.migrate", {"vm": await lab.id_of("VM", "b-db-01"), "targetHost": b2}
    )
    assert error["data"]["code"] == "VM_INCOMPATIBLE_WITH_THIS_HOST"

    async def settled() -> Samples | None:
        samples = await scrape(lab)
        done = total(samples, "xo_migrate_migrations_finished_total")
        return samples if done == 4 else None

    after = await wait_until(settled)
    assert total(before, "xo_migrate_migrations_started_total") == 0
    started = "xo_migrate_migrations_started_total"
    assert value(after, started, mode="xenmotion") == 2
    assert value(after, started, mode="storage_motion") == 1
    assert value(after, started, mode="cross_pool") == 1
    finished = "xo_migrate_migrations_finished_total"
    assert value(after, finished, mode="xenmotion", outcome="success") == 1
    assert value(after, finished, mode="xenmotion", outcome="failure") == 1
    assert value(after, finished, mode="storage_motion", outcome="success") == 1
    assert value(after, finished, mode="cross_pool", outcome="success") == 1
    assert (
        value(
            after,
            "xo_migrate_migration_failures_total",
            mode="xenmotion",
            code="VM_INCOMPATIBLE_WITH_THIS_HOST",
        )
        == 1
    )
    duration = "xo_migrate_migration_duration_seconds_count"
    assert value(after, duration, mode="cross_pool", outcome="success") == 1
    assert value(after, duration, mode="xenmotion", outcome="failure") == 1
    records = {r["vmName"]: r for r in await lab.client.call("migration.getAll")}
    assert value(after, "xo_migrate_migration_bytes_sum", mode="cross_pool") == float(
        records["db-01"]["bytesTotal"]
    )
    assert value(after, "xo_migrate_migration_bytes_count", mode="xenmotion") == 1  # successes
    # XAPI: the calls by pool and method, the failed operation with its code, latencies.
    calls = "xo_migrate_xapi_calls_total"
    assert value(after, calls, pool="Pool A", method="Async.VM.pool_migrate") == 1
    assert value(after, calls, pool="Pool A", method="Async.VM.migrate_send") == 2
    assert value(after, calls, pool="Pool B", method="host.migrate_receive") >= 1
    assert value(after, calls, pool="Pool B", method="event.from") >= 2
    assert (
        value(
            after,
            "xo_migrate_xapi_call_errors_total",
            pool="Pool B",
            method="VM.pool_migrate",
            code="VM_INCOMPATIBLE_WITH_THIS_HOST",
        )
        == 1
    )
    latency = "xo_migrate_xapi_call_duration_seconds_count"
    assert value(after, latency, pool="Pool A", method="VM.migrate_send") == 2
    # Gauges read at scrape time.
    for pool in ("Pool A", "Pool B"):
        assert total(after, "xo_migrate_pool_connected", pool=pool) == 1
        assert total(after, "xo_migrate_migrations_running", pool_name=pool) == 0
    assert value(after, "xo_migrate_websocket_connections") >= 1
    assert value(after, "xo_migrate_push_subscribers") >= 1
    assert value(after, "xo_migrate_push_drops_total") == 0
    assert value(after, "xo_migrate_event_loop_lag_seconds_count") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    # Every series the Grafana dashboard queries exists.
    dashboard = (Path(__file__).parents[2] / "contrib" / "grafana-dashboard.json").read_text()
    queried = set(re.findall(r"\b((?:xo_migrate|process)_[a-z_]+)", dashboard))
    exposed = {name for name, _labels in after}
    assert queried and queried <= exposed, queried - exposed


async def test_running_and_queued_per_pool_and_pool_loss(lab: Lab) -> None:
    ids = await start_one_running_one_queued(lab, ("db-01", "app-01"), "b1")

    async def both_counted() -> Samples | None:
        samples = await scrape(lab)
        running = total(samples, "xo_migrate_migrations_running", pool_name="Pool A")
        queued = total(samples, "xo_migrate_migrations_queued", pool_name="Pool A")
        return samples if (running, queued) == (1, 1) else None

    await wait_until(both_counted)
    for migration_id in reversed(ids):
        await lab.client.call("migration.cancel", {"id": migration_id})
    pool_b = next(s for s in await lab.client.call("server.getAll") if s["label"] == "Pool B")
    await lab.client.call("server.disable", {"id": pool_b["id"]})
    samples = await scrape(lab)
    assert value(samples, "xo_migrate_pool_connected", server=pool_b["id"], pool="Pool B") == 0
    state = "xo_migrate_pool_state"
    assert value(samples, state, server=pool_b["id"], pool="Pool B", state="disconnected") == 1
    assert value(samples, state, server=pool_b["id"], pool="Pool B", state="connected") == 0
    assert total(samples, "xo_migrate_migrations_queued", pool_name="Pool A") == 0


def test_metrics_config_section(tmp_path: Path) -> None:
    cfg = parse_config({"metrics": {"listen": "[::1]:9108", "lag_interval": "1s"}}, tmp_path)
    assert cfg.metrics.listen == ("::1", 9108) and cfg.metrics.lag_interval_s == 1.0
    assert parse_config({}, tmp_path).metrics == MetricsSettings()
    for bad in ({"listen": "9108"}, {"listen": "host:port"}, {"lag_interval": "0"}, {"x": 1}):
        with pytest.raises(ConfigError, match=r"\[metrics\]|unknown config key"):
            parse_config({"metrics": bad}, tmp_path)
