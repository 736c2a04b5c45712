"""The admission queue of a cluster: the per-pool and per-host limits of storage migrations
hold across every instance, with the same fair FIFO as one instance's
(server/migrations/queue.py, whose interface this keeps).

In Redis: `q:wait` (list, arrival order) of migration ids, `q:ticket` (hash id -> pool, host,
group), `q:run` (hash id -> pool, host: the slots taken), `q:paused` (set of paused groups).
One Lua script admits (`pump`): it walks the line in order and moves to `q:run` every ticket
whose pool and host have a free slot, so two instances never admit over a limit together. A
waiting ticket whose migration has no lease any more (its instance died) leaves the line:
whoever adopts that migration queues it again.

Each instance keeps a copy of the line and of the slots (refreshed at every pump), from which
its own tickets learn they are admitted and their places. Changes go through one worker task
in order; every instance pumps when told the line changed (`queue` event) and once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.storage.redis import DOWN_ERRORS, PREFIX, RedisStorage, check_cancel

log = logging.getLogger("xo_migrate.cluster")

PUMP_EVERY_S = 1.0

# KEYS: wait, ticket, run, paused; ARGV: per_pool, per_host, lease prefix.
_PUMP = """
local per_pool, per_host = tonumber(ARGV[1]), tonumber(ARGV[2])
local pools, hosts = {}, {}
local run = redis.call('HGETALL', KEYS[3])
for i = 1, #run, 2 do
  local pool, host = string.match(run[i + 1], '^(.-)|(.*)$')
  pools[pool] = (pools[pool] or 0) + 1
  hosts[host] = (hosts[host] or 0) + 1
end
local admitted = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local t = redis.call('HGET', KEYS[2], id)
  if (not t) or redis.call('EXISTS', ARGV[3] .. id) == 0 then
    redis.call('LREM', KEYS[1], 0, id)
    redis.call('HDEL', KEYS[2], id)
  else
    local pool, host, group = string.match(t, '^(.-)|(.-)|(.*)$')
    local paused = group ~= '' and redis.call('SISMEMBER', KEYS[4], group) == 1
    if (not paused) and (pools[pool] or 0) < per_pool and (hosts[host] or 0) < per_host then
      redis.call('LREM', KEYS[1], 0, id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('HSET', KEYS[3], id, pool .. '|' .. host)
      pools[pool] = (pools[pool] or 0) + 1
      hosts[host] = (hosts[host] or 0) + 1
      admitted[#admitted + 1] = id
    end
  end
end
local line = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  line[#line + 1] = id
  line[#line + 1] = redis.call('HGET', KEYS[2], id)
end
return {#admitted, line, redis.call('HGETALL', KEYS[3])}
"""

WAIT, TICKET, RUN, PAUSED = (PREFIX + k for k in ("q:wait", "q:ticket", "q:run", "q:paused"))


@dataclass(eq=False, slots=True)
class _Ticket:
    key: str
    pool: str
    host: str
    group: str | None = None
    admitted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SharedQueue:
    def __init__(
        self,
        storage: RedisStorage,
        per_pool: int,
        per_host: int,
        announce: Callable[[], None],
        instance: str,
        lease_ms: int,
    ) -> None:
        self._instance = instance
        self._lease_ms = lease_ms
        self.per_pool = max(1, per_pool)
        self.per_host = max(1, per_host)
        self.on_change: Callable[[], None] | None = None
        self._redis = storage.redis
        self._pump_script = storage.redis.register_script(_PUMP)
        self._announce = announce  # tell the other instances the line changed
        self._mine: dict[str, _Ticket] = {}  # this instance's waiting tickets
        self._line: list[tuple[str, str]] = []  # (id, pool) of the whole line, in order
        self._running: set[str] = set()
        self._slots: dict[str, tuple[str, ...]] = {}  # every instance's: id -> (pool, host)
        self._ops: list[tuple[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="cluster-queue")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for ticket in self._mine.values():
            ticket.admitted.cancel()

    # -- AdmissionQueue's interface ------------------------------------------------------------

    def running_in_pool(self, pool: str) -> int:
        """Slots taken in `pool` by every instance (as of the last pump)."""
        return sum(1 for slot in self._slots.values() if slot[0] == pool)

    def running_on_host(self, host: str) -> int:
        return sum(1 for slot in self._slots.values() if slot[-1] == host)

    def holds(self, key: str) -> bool:
        return key in self._running

    def pause(self, group: str) -> None:
        self._do("pause", group)

    def resume(self, group: str) -> None:
        self._do("resume", group)

    async def acquire(self, key: str, pool: str, host: str, group: str | None = None) -> None:
        ticket = _Ticket(key, pool, host, group)
        self._mine[key] = ticket
        self._line.append((key, pool))  # its place at once; the next pump corrects it
        self._do("enter", ticket)
        if self.on_change is not None:
            self.on_change()
        try:
            await asyncio.shield(ticket.admitted)
        except asyncio.CancelledError:
            self._mine.pop(key, None)
            self._running.discard(key)
            self._do("leave", key)  # out of the line, or its slot given back
            raise
        finally:
            self._mine.pop(key, None)

    def hold(self, key: str, pool: str, host: str) -> None:
        """A slot at once, over the limits: a migration XAPI already runs (adopted)."""
        self._running.add(key)
        self._do("hold", (key, pool, host))

    def release(self, key: str) -> None:
        self._running.discard(key)
        self._forget_locally(key)
        self._do("leave", key)

    def _forget_locally(self, key: str) -> None:
        """This instance's copy drops `key` at once (Redis follows at the worker's next turn):
        the slot a migration gives back is free here when its caller hears it ended."""
        self._slots.pop(key, None)
        self._line = [entry for entry in self._line if entry[0] != key]

    def forget(self, key: str) -> None:
        """Another instance took `key` over: stop waiting here, leave Redis as it is."""
        ticket = self._mine.pop(key, None)
        if ticket is not None:
            ticket.admitted.cancel()
        self._running.discard(key)

    def drop(self, key: str) -> None:
        """`key` (a dead instance's) leaves the line and gives its slot back."""
        self._forget_locally(key)
        self._do("leave", key)

    def position(self, key: str) -> int | None:
        return self.positions().get(key)

    def positions(self) -> dict[str, int]:
        """This instance's waiting migrations' places among those of their source pool (all
        instances' together)."""
        seen: dict[str, int] = {}
        places: dict[str, int] = {}
        for key, pool in self._line:
            seen[pool] = seen.get(pool, 0) + 1
            if key in self._mine:
                places[key] = seen[pool]
        return places

    def poke(self) -> None:
        """Another instance changed the line: pump and refresh."""
        self._do("pump", None)

    # -- the worker ------------------------------------------------------------------------------

    def _do(self, op: str, arg: Any) -> None:
        self._ops.append((op, arg))
        self._wake.set()

    async def _work(self) -> None:
        while True:
            check_cancel()  # redis-py may have swallowed it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PUMP_EVERY_S):
                    await self._wake.wait()
            self._wake.clear()
            ops, self._ops = self._ops, []
            try:
                changed = await self._apply(ops)
                admitted = await self._pump()
            except DOWN_ERRORS as exc:
                check_cancel()
                # Redis lost: keep the operations, in order, for when it is back.
                self._ops = ops + self._ops
                log.warning("event=queue_unreachable error=%s", type(exc).__name__)
                await asyncio.sleep(PUMP_EVERY_S)
                continue
            if changed or admitted:
                self._announce()

    async def _apply(self, ops: list[tuple[str, Any]]) -> bool:
        if not ops:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            for op, arg in ops:
                if op == "enter":
                    # Leased from its first step: the line drops tickets without a lease.
                    lease = PREFIX + "lease:" + arg.key
                    pipe.set(lease, self._instance, nx=True, px=self._lease_ms)
                    pipe.hset(TICKET, arg.key, f"{arg.pool}|{arg.host}|{arg.group or ''}")
                    pipe.rpush(WAIT, arg.key)
                elif op == "leave":
                    pipe.lrem(WAIT, 0, arg)
                    pipe.hdel(TICKET, arg)
                    pipe.hdel(RUN, arg)
                elif op == "hold":
                    key, pool, host = arg
                    pipe.hset(RUN, key, f"{pool}|{host}")
                elif op == "pause":
                    pipe.sadd(PAUSED, arg)
                elif op == "resume":
                    pipe.srem(PAUSED, arg)
            await pipe.execute()
        return any(op != "pump" for op, _ in ops)

    async def _pump(self) -> int:
        admitted, line, running = await self._pump_script(
            [WAIT, TICKET, RUN, PAUSED], [self.per_pool, self.per_host, PREFIX + "lease:"]
        )
        self._line = [(line[i], str(line[i + 1]).split("|", 1)[0]) for i in range(0, len(line), 2)]
        self._slots = {
            running[i]: tuple(str(running[i + 1]).split("|", 1)) for i in range(0, len(running), 2)
        }
        slots = self._slots
        for key, ticket in list(self._mine.items()):
            if key in slots and not ticket.admitted.done():
                self._running.add(key)
                ticket.admitted.set_result(None)
        if self.on_change is not None:
            self.on_change()
        return int(admitted)
