"""A migration as the server tracks it, and its object in the live collection (type
`migration`, pushed through `all` notifications like any XAPI object)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from server.migrations.hints import hint_for
from server.migrations.plan import MigrationRequest, Plan
from server.migrations.progress import ProgressTracker

TERMINAL = frozenset({"success", "failure", "cancelled", "interrupted"})


@dataclass(eq=False, slots=True)
class Migration:
    request: MigrationRequest
    method: str  # the API method that asked: vm.migrate, vm.migrate_pool, migration.start
    user_id: str | None
    user_email: str | None
    plan: Plan
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "queued"  # queued | running | success | failure | cancelled | interrupted
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    waiting_for: str | None = None  # why a running migration is not moving (a retry wait)
    error: dict[str, Any] | None = None
    exception: BaseException | None = None  # what vm.migrate re-raises to its caller
    tracker: ProgressTracker | None = None
    xapi_pool: str | None = None
    xapi_task_ref: str | None = None
    xapi_task_id: str | None = None
    in_xapi_task: bool = False
    xapi_done: bool = False  # XAPI reported success: too late to cancel
    cancel_requested: bool = False
    abandoned: bool = False  # another instance of the cluster took it over (lease lost)
    queue_position: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    request_json: str = ""  # serialized once: the request never changes

    def __post_init__(self) -> None:
        self.request_json = json.dumps(self.request.to_json())

    @property
    def active(self) -> bool:
        return self.status not in TERMINAL

    def new_tracker(self) -> ProgressTracker:
        previous = self.tracker.view().progress if self.tracker is not None else 0.0
        self.tracker = ProgressTracker(
            storage_motion=self.plan.storage_motion,
            disk_bytes=self.plan.disk_bytes,
            memory_bytes=self.plan.memory_bytes,
        )
        # A fallback to storage motion starts a new transfer; progress still never goes back.
        self.tracker.floor(previous)
        return self.tracker

    def set_error(self, code: str, params: list[str], message: str) -> None:
        self.error = {"code": code, "params": params, "message": message, "hint": hint_for(code)}

    def to_xo(self) -> dict[str, Any]:
        view = self.tracker.view() if self.tracker is not None else None
        plan = self.plan
        eta: float | None
        if self.status == "success":
            progress, phase, eta = 1.0, "done", 0.0
        elif view is not None:
            progress, phase, eta = view.progress, view.phase, view.eta
        else:
            progress, phase, eta = 0.0, "preflight", None
        if not self.active and self.status != "success":
            eta = None
        return {
            "id": self.id,
            "type": "migration",
            "status": self.status,
            "phase": phase,
            "progress": progress,
            "bytesDone": view.bytes_done if view else 0,
            "bytesTotal": view.bytes_total if view else plan.disk_bytes + plan.memory_bytes,
            "rate": view.rate if view and self.active else None,
            "eta": eta,
            "queuePosition": self.queue_position,
            "waitingFor": self.waiting_for,
            "mode": plan.mode,
            "crossPool": plan.cross_pool,
            "vm": plan.vm,
            "vmName": plan.vm_name,
            "sourcePool": plan.source_pool,
            "sourceHost": plan.source_host,
            "targetPool": plan.target_pool,
            "targetHost": plan.target_host,
            "targetHostName": plan.target_host_name,
            "migrationNetwork": plan.migration_network,
            "xapiTask": self.xapi_task_id,
            "xapiTaskRef": self.xapi_task_ref,
            "xapiPool": self.xapi_pool,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "duration": (self.finished - self.started) if self.finished and self.started else None,
            "user": self.user_id,
            "userEmail": self.user_email,
            "method": self.method,
            "batch": self.request.batch,
            "$pool": plan.source_pool,
        }
