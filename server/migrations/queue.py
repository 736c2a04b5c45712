"""Admission of storage migrations: a limit per source pool and per source host, fair FIFO.

XAPI refuses a 4th concurrent `VM.migrate_send` from one host (TOO_MANY_STORAGE_MIGRATES) and
xo-server caps storage motion at 3 per source pool; we keep both limits ourselves so that
nothing is refused, and every waiting migration sees its place in the line.

FIFO is per limit: the oldest waiting migration whose pool and host both have a free slot is
admitted first; a migration blocked only by its own busy host does not hold back the others
of its pool (no head-of-line blocking), but one that arrived earlier for a free slot always
goes before.

A ticket may belong to a group (a batch of moves): while its group is paused, it keeps its
place in the line but is not admitted (`pause` / `resume`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Ticket:
    key: str  # the migration id
    pool: str
    host: str
    group: str | None = None
    admitted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class AdmissionQueue:
    def __init__(
        self, per_pool: int, per_host: int, on_change: Callable[[], None] | None = None
    ) -> None:
        self.per_pool = max(1, per_pool)
        self.per_host = max(1, per_host)
        self._waiting: list[Ticket] = []
        self._running: dict[str, Ticket] = {}
        self._paused: set[str] = set()
        self.on_change = on_change

    def running_in_pool(self, pool: str) -> int:
        return sum(1 for t in self._running.values() if t.pool == pool)

    def running_on_host(self, host: str) -> int:
        return sum(1 for t in self._running.values() if t.host == host)

    def holds(self, key: str) -> bool:
        """`key` has a slot (admitted, or held)."""
        return key in self._running

    def pause(self, group: str) -> None:
        """The group's waiting tickets are no longer admitted (they keep their place)."""
        self._paused.add(group)

    def resume(self, group: str) -> None:
        if group in self._paused:
            self._paused.discard(group)
            self._pump()

    async def acquire(self, key: str, pool: str, host: str, group: str | None = None) -> None:
        """Wait for a slot; cancelling the waiter leaves the line."""
        ticket = Ticket(key, pool, host, group)
        self._waiting.append(ticket)
        self._pump()
        try:
            await asyncio.shield(ticket.admitted)
        except asyncio.CancelledError:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._changed()
            else:  # admitted meanwhile: give the slot back
                self.release(key)
            raise

    def hold(self, key: str, pool: str, host: str) -> None:
        """Take a slot at once, even over the limits: for a migration XAPI is already running
        (found again after a restart), which counts whatever the limits say."""
        ticket = Ticket(key, pool, host)
        ticket.admitted.set_result(None)
        self._running[key] = ticket

    def release(self, key: str) -> None:
        if self._running.pop(key, None) is not None:
            self._pump()

    def forget(self, key: str) -> None:
        """`key` is no longer followed here (another instance took it over): its slot goes."""
        self.release(key)

    def position(self, key: str) -> int | None:
        """1-based place among the migrations waiting on the same source pool."""
        target = next((t for t in self._waiting if t.key == key), None)
        if target is None:
            return None
        place = 1
        for ticket in self._waiting:
            if ticket is target:
                break
            if ticket.pool == target.pool:
                place += 1
        return place

    def positions(self) -> dict[str, int]:
        """Every waiting migration's place (as `position`), in one pass over the line."""
        seen_per_pool: dict[str, int] = {}
        places: dict[str, int] = {}
        for ticket in self._waiting:
            seen_per_pool[ticket.pool] = seen_per_pool.get(ticket.pool, 0) + 1
            places[ticket.key] = seen_per_pool[ticket.pool]
        return places

    def _pump(self) -> None:
        admitted = False
        for ticket in list(self._waiting):
            if ticket.group in self._paused:
                continue
            if (
                self.running_in_pool(ticket.pool) < self.per_pool
                and self.running_on_host(ticket.host) < self.per_host
            ):
                self._waiting.remove(ticket)
                self._running[ticket.key] = ticket
                if not ticket.admitted.done():
                    ticket.admitted.set_result(None)
                admitted = True
        if admitted or self._waiting:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
