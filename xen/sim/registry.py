"""The contract between the simulator's dispatcher and the modules that implement messages.

Explicit messages (sessions, events, tasks, migrations ...) register a handler with
`@message("VM.pool_migrate")`; everything else that the datamodel declares is answered by the
dispatcher's generic getters/setters (get_all, get_record, get_<field>, set_<field> ...).

A handler receives a `CallContext` and the call's arguments after the session, already
unmarshalled to native Python values per the datamodel's parameter types (ints as int, refs
as str, maps as dict, sets as list). It returns a native value (None for void) or raises
`XapiFailure(code, *params)`. Handlers may be plain or `async def`; long-running ones sleep
through `ctx.sleep`, which follows the lab's time scale and notices cancellation.

When a message is called as `Async.<msg>`, the dispatcher creates the task record, runs the
handler in a background task it owns, and completes the task from the outcome: success with
the result as an XML string, failure with `error_info`, `cancelled` for TASK_CANCELLED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from xen.sim.db import NULL_REF, Database, XapiFailure
from xen.sim.rrd.activity import ActivityLog

__all__ = [
    "NULL_REF",
    "CallContext",
    "Fault",
    "Message",
    "PoolLike",
    "SimulatorLike",
    "Timing",
    "XapiFailure",
    "message",
    "messages",
]

Handler = Callable[..., Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Message:
    name: str  # canonical wire name, e.g. "VM.pool_migrate"
    handler: Handler
    # Fewest args (after the session) accepted: XAPI lets trailing defaulted params be omitted
    # (login 2-4, assert_can_migrate 6-7, migrate_send 6-8). None = exactly the schema's count.
    min_args: int | None = None
    # Most args accepted (extra trailing args beyond the schema are ignored by XAPI when the
    # message has defaulted params). None = the schema's count.
    max_args: int | None = None
    asynchronous: bool = True  # has an Async.* form


_MESSAGES: dict[str, Message] = {}


def message(
    name: str,
    *,
    min_args: int | None = None,
    max_args: int | None = None,
    asynchronous: bool = True,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _MESSAGES[name] = Message(name, handler, min_args, max_args, asynchronous)
        return handler

    return register


def messages() -> dict[str, Message]:
    return _MESSAGES


# -- lab-level configuration shared by the lab loader and the behaviours -------------------


@dataclass(slots=True)
class Timing:
    """The phase timing model of xapi.md 6.3, in simulated seconds and bytes per second."""

    time_scale: float = 1.0  # real seconds per simulated second (0.05 = 20x faster)
    link_rate: float = 1.25e9  # bytes/s of the migration network (10 GbE)
    disk_rate: float = 120e6  # bytes/s for storage copies (min(link, disk) is used)
    mem_rate: float = 350e6  # bytes/s of memory pre-copy per VM
    dirty_factor: float = 1.0  # 1 = idle guest ... 5 = busy
    dispatch_s: float = 0.5  # checks and reservation
    # Lifetime of migrate_send's `VM.assert_can_migrate` subtask, taken out of dispatch_s
    # (long enough, once scaled, for event.from watchers to see it added and deleted).
    assert_s: float = 0.3
    vdi_setup_s: float = 2.0  # per-VDI snapshot + mirror setup
    metadata_import_s: float = 1.5  # cross-pool VM metadata import
    memory_setup_s: float = 1.5
    switch_s: float = 0.5  # stop-and-copy, not cancellable
    finalise_s: float = 1.0
    progress_interval_s: float = 1.0  # how often a running task's progress is updated
    login_failure_delay_s: float = 5.0  # SESSION_AUTHENTICATION_FAILED is slow on purpose
    # xapi's periodic `pool` heartbeat (a `mod` event of the pool object) every this many
    # simulated seconds; 0 = off (the default: it would wake every idle `pool` long-poll).
    pool_heartbeat_s: float = 0.0


@dataclass(slots=True)
class Fault:
    """One injected fault from the lab file's [[faults]] (or set by a test at run time).

    kinds: "migration" (fail VM `vm` with `code`/`params` in `phase`: dispatch | disks |
    metadata | memory | finalise), "host_offline" / "host_disabled" (`host`, from `at_s`),
    "login_slow" (`delay_s`), "login_fail", "session_expiry" (`after_s`),
    "master_failover" (to host `host` at `at_s`).
    """

    kind: str
    pool: str = ""
    vm: str = ""  # name_label or uuid
    host: str = ""  # name_label or uuid
    phase: str = ""
    code: str = ""
    params: list[str] = field(default_factory=list)
    at_s: float = 0.0
    after_s: float = 0.0
    delay_s: float = 0.0


class SimulatorLike(Protocol):
    def pool_by_address(self, address: str) -> PoolLike | None:
        """The pool one of whose hosts listens on `address` (an IP, no port)."""
        ...

    @property
    def pools(self) -> Sequence[PoolLike]: ...

    def server_certificate(self, address: str) -> str:
        """The PEM certificate the host at `address` serves (host.get_server_certificate)."""
        ...


class PoolLike(Protocol):
    """What behaviours may rely on from a simulated pool (implemented by sim-core's SimPool)."""

    name: str
    uuid: str
    db: Database
    timing: Timing
    faults: list[Fault]
    activity: ActivityLog  # network traffic of migrations, for the hosts' stats
    updates: dict[str, list[dict[str, Any]]]  # host ref -> packages its updater reports

    # Read-only, so that a SimPool whose `sim` is the concrete Simulator still conforms.
    @property
    def sim(self) -> SimulatorLike: ...

    @property
    def master_ref(self) -> str: ...

    def host_address(self, host_ref: str) -> str:
        """The management address of a host (e.g. "127.0.1.2")."""
        ...

    def base_url(self, address: str) -> str:
        """ "http(s)://<address>:<port>" as a client reaches that host."""
        ...

    def create_session(self, username: str) -> str:
        """A new, valid session ref in this pool (migrate_receive makes one for the sender)."""
        ...

    def session_valid(self, session_ref: str) -> bool: ...

    def find_fault(self, kind: str, **match: str) -> Fault | None: ...


@dataclass(slots=True)
class CallContext:
    pool: PoolLike
    session: str  # the caller's session ref ("" for session-less calls)
    method: str  # canonical wire name, without "Async."
    # The call's task: the Async.* task, or the short-lived task of a synchronous call of an
    # async-capable message; None for the others (getters, setters, session, event, task).
    task: str | None = None

    @property
    def db(self) -> Database:
        return self.pool.db

    # -- task helpers (no-ops for synchronous calls) ------------------------------------

    def set_progress(self, progress: float) -> None:
        if self.task is not None and self.db.exists("task", self.task):
            progress = min(1.0, max(0.0, progress))
            if self.db.get("task", self.task)["progress"] != progress:
                self.db.update("task", self.task, progress=progress)

    def set_cancellable(self, cancellable: bool) -> None:
        if self.task is not None and self.db.exists("task", self.task):
            ops = ["cancel"] if cancellable else []
            if self.db.get("task", self.task)["allowed_operations"] != ops:
                self.db.update("task", self.task, allowed_operations=ops)

    @property
    def cancellable(self) -> bool:
        if self.task is None or not self.db.exists("task", self.task):
            return False
        return "cancel" in self.db.get("task", self.task)["allowed_operations"]

    @property
    def cancel_requested(self) -> bool:
        if self.task is None or not self.db.exists("task", self.task):
            return False
        return "cancel" in self.db.get("task", self.task)["current_operations"].values()

    def check_cancelled(self) -> None:
        """A cancellation checkpoint: honoured only while the task is cancellable."""
        if self.cancel_requested and self.cancellable:
            raise XapiFailure("TASK_CANCELLED", self.task or "")

    async def sleep(self, sim_seconds: float, *, step: float = 0.05) -> None:
        """Sleep `sim_seconds` of simulated time, checking for cancellation as it goes."""
        remaining = max(0.0, sim_seconds) * self.pool.timing.time_scale
        while remaining > 0:
            self.check_cancelled()
            chunk = min(step, remaining)
            await asyncio.sleep(chunk)
            remaining -= chunk
        self.check_cancelled()
