"""A batch of VM moves as the server tracks it, and its object in the live collection (type
`migrationBatch`, pushed through `all` like `migration` objects): the plan of every move and
why, the VMs refused and why, each move's live status, totals, and aggregate bytes, rate and
ETA."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from server.migrations.model import TERMINAL
from server.migrations.placement import Outcome
from server.migrations.plan import MigrationRequest, resident_host

# A move's status: planned (not yet handed to the migration service), refused (never will
# be), then its migration's: queued, running, success, failure, cancelled, interrupted.
MOVE_DONE = TERMINAL | {"refused"}
BATCH_TERMINAL = frozenset({"success", "failure", "cancelled"})


@dataclass(eq=False, slots=True)
class BatchMove:
    vm: str
    vm_name: str
    source_pool: str
    source_host: str | None
    memory: int  # reserved on the target until the move ends
    request: MigrationRequest | None  # None: refused
    target_host: str | None = None
    target_host_name: str = ""
    target_pool: str | None = None
    mode: str | None = None
    sr_bytes: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    refusal: dict[str, Any] | None = None
    disks: list[dict[str, Any]] = field(default_factory=list)
    vifs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "planned"
    migration: str | None = None
    migration_created: float = 0.0
    queue_position: int | None = None
    progress: float = 0.0
    bytes_done: int = 0
    bytes_total: int = 0
    rate: float | None = None
    error: dict[str, Any] | None = None
    retried: bool = False  # run again once after a restart interrupted it before XAPI did
    request_record: dict[str, Any] | None = None  # `request` as saved (it never changes)

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> BatchMove:
        vm = outcome.vm
        chosen = outcome.chosen
        move = cls(
            vm=vm["id"],
            vm_name=str(vm.get("name_label", "")),
            source_pool=str(vm.get("$pool", "")),
            source_host=resident_host(vm),
            memory=outcome.needed,
            request=chosen.request if chosen else None,
            reasons=list(outcome.reasons),
            rejected=[r.to_json() for r in outcome.rejected],
        )
        if chosen is None:
            move.status = "refused"
            assert outcome.refusal is not None
            move.refusal = outcome.refusal.to_json()
            return move
        plan = chosen.plan
        move.target_host = plan.target_host
        move.target_host_name = plan.target_host_name
        move.target_pool = plan.target_pool
        move.mode = plan.mode
        move.sr_bytes = dict(chosen.sr_bytes)
        public = plan.to_json()
        move.disks = public["disks"]
        move.vifs = public["vifs"]
        move.bytes_total = plan.disk_bytes + plan.memory_bytes
        return move

    @property
    def done(self) -> bool:
        return self.status in MOVE_DONE

    def observe(self, record: dict[str, Any]) -> None:
        """Follow the move's migration (its object or its history record)."""
        self.migration = record["id"]
        self.migration_created = float(record.get("created") or 0.0)
        self.status = record["status"]
        self.queue_position = record.get("queuePosition")
        self.progress = float(record.get("progress") or 0.0)
        self.bytes_done = int(record.get("bytesDone") or 0)
        self.bytes_total = int(record.get("bytesTotal") or self.bytes_total)
        self.rate = record.get("rate") if self.status == "running" else None
        self.error = record.get("error")
        if record.get("mode"):
            self.mode = record["mode"]

    def to_json(self) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "vmName": self.vm_name,
            "status": self.status,
            "migration": self.migration,
            "sourcePool": self.source_pool,
            "sourceHost": self.source_host,
            "targetPool": self.target_pool,
            "targetHost": self.target_host,
            "targetHostName": self.target_host_name,
            "mode": self.mode,
            "memoryReserved": self.memory,
            "reasons": self.reasons,
            "rejectedHosts": self.rejected,
            "refusal": self.refusal,
            "disks": self.disks,
            "vifs": self.vifs,
            "queuePosition": self.queue_position,
            "progress": self.progress,
            "bytesDone": self.bytes_done,
            "bytesTotal": self.bytes_total,
            "rate": self.rate,
            "error": self.error,
        }

    def to_record(self) -> dict[str, Any]:
        out = self.to_json()
        if self.request_record is None and self.request is not None:
            self.request_record = self.request.to_json()
        out["request"] = self.request_record
        out["srBytes"] = self.sr_bytes
        out["migrationCreated"] = self.migration_created
        out["retried"] = self.retried
        return out

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> BatchMove:
        request = r.get("request")
        return cls(
            vm=r["vm"],
            vm_name=r.get("vmName") or "",
            source_pool=r.get("sourcePool") or "",
            source_host=r.get("sourceHost"),
            memory=int(r.get("memoryReserved") or 0),
            request=MigrationRequest.from_json(request) if request else None,
            target_host=r.get("targetHost"),
            target_host_name=r.get("targetHostName") or "",
            target_pool=r.get("targetPool"),
            mode=r.get("mode"),
            sr_bytes=dict(r.get("srBytes") or {}),
            reasons=list(r.get("reasons") or []),
            rejected=list(r.get("rejectedHosts") or []),
            refusal=r.get("refusal"),
            disks=list(r.get("disks") or []),
            vifs=list(r.get("vifs") or []),
            status=r.get("status") or "planned",
            migration=r.get("migration"),
            migration_created=float(r.get("migrationCreated") or 0.0),
            queue_position=r.get("queuePosition"),
            progress=float(r.get("progress") or 0.0),
            bytes_done=int(r.get("bytesDone") or 0),
            bytes_total=int(r.get("bytesTotal") or 0),
            error=r.get("error"),
            retried=bool(r.get("retried")),
        )


@dataclass(eq=False, slots=True)
class Batch:
    kind: str  # evacuate | batch | maintenance
    moves: list[BatchMove]
    method: str  # the API method that asked (its moves' migrations carry it too)
    user_id: str | None
    user_email: str | None
    stop_on_error: bool = False
    host: str | None = None  # the host being evacuated
    target_pool: str | None = None
    planning_ms: float = 0.0
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "running"  # running | paused | success | failure | cancelled
    paused: bool = False
    cancel_requested: bool = False
    stopping: bool = False  # a move failed with stopOnError: nothing more starts
    created: float = field(default_factory=time.time)
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _by_vm: dict[str, BatchMove] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_vm = {m.vm: m for m in self.moves}

    @property
    def active(self) -> bool:
        return self.status not in BATCH_TERMINAL

    @property
    def evacuated_host(self) -> str | None:
        return self.host if self.kind in ("evacuate", "maintenance") else None

    def move_of(self, vm: str) -> BatchMove | None:
        return self._by_vm.get(vm)

    def totals(self) -> dict[str, int]:
        out = {"moves": len(self.moves)}
        for key in (
            "planned",
            "refused",
            "queued",
            "running",
            "success",
            "failure",
            "cancelled",
            "interrupted",
        ):
            out[key] = 0
        for move in self.moves:
            out[move.status] = out.get(move.status, 0) + 1
        return out

    def settle_status(self) -> str | None:
        """The final status once no move can change any more; None while one still can."""
        if any(not m.done for m in self.moves):
            return None
        if self.cancel_requested:
            return "cancelled"
        return "success" if all(m.status == "success" for m in self.moves) else "failure"

    def to_xo(self) -> dict[str, Any]:
        moving = [m for m in self.moves if m.status != "refused"]
        total = sum(m.bytes_total for m in moving)
        done = sum(m.bytes_total if m.status == "success" else m.bytes_done for m in moving)
        rates = [m.rate for m in moving if m.rate]
        rate = sum(rates) if rates else None
        eta: float | None = None
        if not self.active:
            eta = 0.0 if self.status == "success" else None
        elif rate:
            eta = max(0.0, (total - done) / rate)
        return {
            "id": self.id,
            "type": "migrationBatch",
            "kind": self.kind,
            "method": self.method,
            "status": self.status,
            "paused": self.paused,
            "stopOnError": self.stop_on_error,
            "host": self.host,
            "targetPool": self.target_pool,
            "totals": self.totals(),
            "progress": (done / total) if total else (1.0 if not self.active else 0.0),
            "bytesDone": done,
            "bytesTotal": total,
            "rate": rate,
            "eta": eta,
            "planningMs": round(self.planning_ms, 1),
            "moves": [m.to_json() for m in self.moves],
            "created": self.created,
            "finished": self.finished,
            "user": self.user_id,
            "userEmail": self.user_email,
            "$pool": self.moves[0].source_pool if self.moves else None,
        }

    def to_record(self) -> dict[str, Any]:
        out = self.to_xo()
        out["moves"] = [m.to_record() for m in self.moves]
        out["cancelRequested"] = self.cancel_requested
        out["stopping"] = self.stopping
        return out

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Batch:
        return cls(
            kind=r.get("kind") or "batch",
            moves=[BatchMove.from_record(m) for m in r.get("moves") or []],
            method=r.get("method") or "migration.batch",
            user_id=r.get("user"),
            user_email=r.get("userEmail"),
            stop_on_error=bool(r.get("stopOnError")),
            host=r.get("host"),
            target_pool=r.get("targetPool"),
            planning_ms=float(r.get("planningMs") or 0.0),
            id=r["id"],
            status=r.get("status") or "running",
            paused=bool(r.get("paused")),
            cancel_requested=bool(r.get("cancelRequested")),
            stopping=bool(r.get("stopping")),
            created=float(r.get("created") or time.time()),
            finished=r.get("finished"),
        )
