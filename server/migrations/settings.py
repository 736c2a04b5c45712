"""Tunables of the migration service (the `[migration]` table of the configuration)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class MigrationSettings:
    per_pool_limit: int = 3  # concurrent storage migrations per source pool (xo-server: 3)
    per_host_limit: int = 3  # per source host (XAPI refuses a 4th)
    retry_delay_s: float = 10.0  # wait after TOO_MANY_STORAGE_MIGRATES (xo-server: 10 s)
    cancel_wait_s: float = 30.0  # how long migration.cancel waits for XAPI's answer
    history_keep: int = 1000  # finished migrations kept in the database
    finished_visible_s: float = 3600.0  # finished migrations stay in the live collection
    recover_wait_s: float = 60.0  # how long to wait for a lost or not yet connected pool
    arrival_wait_s: float = 10.0  # after success, how long to wait to see the VM on its target
    plan_checks: int = 8  # XAPI dry runs (VM.assert_can_migrate) at once while planning a batch
