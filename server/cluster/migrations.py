"""Migrations in a cluster: who owns each one, and what the other instances see of it.

- Leases: `xom:lease:<migration id>` = the owning instance's id, with a TTL (`[database]
  lease_ttl`, 5 s by default). A new migration is leased by its first step (server/cluster/
  queue.py, or its first record write: server/storage/redis.py); the owner renews all its
  leases every third of the TTL in one Lua call, which tells it the ones it lost (never two
  owners: a lost lease makes the instance drop the migration at once, and the store refuses
  the records of a migration leased by someone else). An instance that cannot reach Redis
  for a whole TTL drops them all: by then another one may have taken them.
- Adoption: every instance looks for active migrations without a lease (their owner died, or
  stopped and gave them up) every third of the TTL and when told a lease was given up; the
  first to take the lease (SET NX) adopts it through the restart-recovery path
  (server/migrations/recovery.py): a running one's XAPI task is followed by its ref, or the
  VM's place decides; a queued one is queued again.
- Objects: every change of a migration's object is published (coalesced per migration, in
  order) and put in the other instances' collections, so their clients see it pushed like
  their own; progress is kept monotonic by the receivers too (an adopter resumes from the
  last progress seen). Ended migrations leave the collections after `finished_visible_s`.
- `migration.cancel` on another instance is sent to the owner (a Redis list per instance:
  RPUSH the request, poll the answer); `migration.wait` waits for the end seen anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from server import errors
from server.storage.redis import DOWN_ERRORS, PREFIX, check_cancel, unless_unreachable

if TYPE_CHECKING:
    from server.cluster import Cluster
    from server.migrations.service import MigrationService

log = logging.getLogger("xo_migrate.cluster")

ACTIVE = ("queued", "running")

# ARGV: lease prefix, instance id, ttl ms, ids...: renew ours; return the ids we lost.
_RENEW = """
local lost = {}
for i = 4, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local owner = redis.call('GET', key)
  if owner == ARGV[2] then
    redis.call('PEXPIRE', key, ARGV[3])
  elseif not owner then
    redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# ARGV: lease prefix, instance id: give up our leases of these ids.
_RELEASE = """
for i = 3, #ARGV do
  if redis.call('GET', ARGV[1] .. ARGV[i]) == ARGV[2] then redis.call('DEL', ARGV[1] .. ARGV[i]) end
end
return 0
"""

LEASE = PREFIX + "lease:"
POLL_S = 0.05  # requests and answers between instances are polled this often


class ClusterMigrations:
    """The RemoteMigrations of server/migrations/service.py, and the lease keeper."""

    def __init__(self, cluster: Cluster, service: MigrationService) -> None:
        self.cluster = cluster
        self.service = service
        self.redis = cluster.redis
        self.ttl_s = cluster.lease_ttl_s
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._seen: dict[str, dict[str, Any]] = {}  # other instances' migrations, as published
        self._ended_at: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._outbox: dict[str, dict[str, Any]] = {}
        self._adopt_now = asyncio.Event()
        self._last_renewal = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        service = self.service
        service.remote = self
        service.publish_listeners.append(self._published)
        self.cluster.on("migration", self._on_object)
        self.cluster.on("released", lambda _event: self._adopt_now.set())
        await self._load_objects()
        await self._adopt()  # before the batches resume: as a restart's recovery
        for coro, name in (
            (self._keep_leases(), "cluster-leases"),
            (self._look_for_orphans(), "cluster-adopt"),
            (self._serve_requests(), "cluster-rpc"),
            (self._sweep(), "cluster-sweep"),
        ):
            task = asyncio.create_task(coro, name=name)
            self._tasks.add(task)

    async def stop(self, service: MigrationService) -> None:
        """Stop the loops, stop the service (last records written), give the leases up."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        ids = service.live_ids()
        await service.aclose()
        if ids:
            with unless_unreachable():
                await self._release([], [LEASE, self.cluster.id, *ids])
                await self.redis.publish(
                    PREFIX + "events",
                    orjson.dumps({"kind": "released", "from": self.cluster.id, "ids": ids}),
                )
            log.info("event=leases_released count=%d", len(ids))

    async def catch_up(self) -> None:
        await self._load_objects()
        self._adopt_now.set()

    # -- leases ----------------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        while True:
            check_cancel()  # redis-py may have swallowed it
            await asyncio.sleep(self.ttl_s / 3)
            ids = self.service.live_ids()
            try:
                lost = await self._renew([], [LEASE, self.cluster.id, int(self.ttl_s * 1000), *ids])
            except DOWN_ERRORS:
                check_cancel()
                if time.monotonic() - self._last_renewal > self.ttl_s:
                    # Unreachable for a whole TTL: another instance may own them by now.
                    for migration_id in ids:
                        self._abandon(migration_id)
                continue
            self._last_renewal = time.monotonic()
            for migration_id in lost:
                self._abandon(migration_id)

    def _abandon(self, migration_id: str) -> None:
        m = self.service.live(migration_id)
        if m is not None:
            self.service.abandon(m)

    async def _look_for_orphans(self) -> None:
        while True:
            check_cancel()  # redis-py may have swallowed it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl_s / 3):
                    await self._adopt_now.wait()
            self._adopt_now.clear()
            with unless_unreachable():
                await self._adopt()

    async def _adopt(self) -> None:
        """Take the lease of every active migration that has none, and adopt it: running
        ones first (they hold their VM and queue slot before a re-queued one asks for it),
        as a restart's recovery does."""
        if not self.cluster.storage.available:
            return
        active = await self.redis.smembers(PREFIX + "migrations:active")
        taken: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for migration_id in sorted(active):
            if self.service.owns(migration_id):
                continue
            lease = await self.redis.set(
                LEASE + migration_id, self.cluster.id, nx=True, px=int(self.ttl_s * 1000)
            )
            if not lease:
                continue
            raw = await self.redis.hmget(
                PREFIX + "migration:" + migration_id, ["record", "request"]
            )
            record = orjson.loads(raw[0]) if raw[0] is not None else {}
            if record.get("status") not in ACTIVE:
                await self._release([], [LEASE, self.cluster.id, migration_id])
                continue
            taken.append((record, orjson.loads(raw[1] or "{}")))
        taken.sort(key=lambda pair: (pair[0]["status"] != "running", pair[0]["created"]))
        for record, request in taken:
            migration_id = record["id"]
            log.info(
                "migration=%s event=taken_over status=%s instance=%s",
                migration_id,
                record["status"],
                self.cluster.id,
            )
            self._seen.pop(migration_id, None)
            queue = self.service.queue
            if record["status"] == "queued":
                if hasattr(queue, "drop"):
                    queue.drop(migration_id)  # its ticket was its owner's: queued again below
                # Queued again under a new id: its old object must not hold the VM.
                self.service.store.remove(migration_id)
            self.service.recovery.take_over(record, request)

    # -- objects ---------------------------------------------------------------------------

    def _published(self, record: dict[str, Any]) -> None:
        """The service changed one of its migrations: tell the others (latest per id)."""
        first = not self._outbox
        self._outbox[record["id"]] = record
        if first:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        records, self._outbox = list(self._outbox.values()), {}
        for record in records:
            self.cluster.emit("migration", record=record)

    async def _on_object(self, event: dict[str, Any]) -> None:
        record = event.get("record")
        if not isinstance(record, dict) or self.service.owns(str(record.get("id"))):
            return
        migration_id = str(record["id"])
        before = self._seen.get(migration_id)
        if before is not None and record.get("status") in ACTIVE:
            # Monotonic whoever sends it (an adopter resumes from its record).
            record["progress"] = max(record.get("progress") or 0.0, before.get("progress") or 0.0)
        if before is not None and before.get("status") not in ACTIVE:
            if record.get("status") in ACTIVE:
                return  # a late frame of a migration already over
        self._seen[migration_id] = record
        if record.get("status") not in ACTIVE:
            self._ended_at.setdefault(migration_id, time.monotonic())
        self.service.store.set(record)
        async with self._changed:
            self._changed.notify_all()

    async def _load_objects(self) -> None:
        """The live migrations of the other instances, as last recorded (at start, and when
        Redis is back)."""
        with unless_unreachable():
            for record, _request in await self.cluster.storage.active_migrations():
                if not self.service.owns(record["id"]):
                    await self._on_object({"record": record})

    async def _sweep(self) -> None:
        """Ended migrations of other instances leave the collection, as ours do."""
        keep = self.service.settings.finished_visible_s
        while True:
            check_cancel()  # redis-py may have swallowed it
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for migration_id, ended in list(self._ended_at.items()):
                if now - ended >= keep:
                    del self._ended_at[migration_id]
                    self._seen.pop(migration_id, None)
                    if not self.service.owns(migration_id):
                        self.service.store.remove(migration_id)

    # -- RemoteMigrations ------------------------------------------------------------------

    async def wait(self, migration_id: str) -> dict[str, Any]:
        while True:
            check_cancel()  # redis-py may have swallowed it
            m = self.service.live(migration_id)
            if m is not None:  # adopted here meanwhile
                await m.done.wait()
                if not m.abandoned:
                    return m.to_xo()
                continue
            seen = self._seen.get(migration_id)
            if seen is not None and seen.get("status") not in ACTIVE:
                return seen
            record = await self.cluster.storage.migration(migration_id)
            if record is not None and record.get("status") not in ACTIVE:
                return record
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._changed.wait()

    async def cancel(self, migration_id: str) -> dict[str, Any]:
        """Ask the owner; wait for one (within a lease TTL) if the migration has none now."""
        deadline = time.monotonic() + self.ttl_s + 1
        while True:
            check_cancel()  # redis-py may have swallowed it
            m = self.service.live(migration_id)
            if m is not None:
                return await self.service.cancel(migration_id)
            owner = await self.redis.get(LEASE + migration_id)
            if owner is not None and owner != self.cluster.id:
                return await self._ask(owner, "cancel", migration_id)
            if time.monotonic() > deadline:
                raise errors.forbidden_operation(
                    "cancel", "no instance follows this migration now; try again"
                )
            self._adopt_now.set()
            await asyncio.sleep(0.2)

    async def _ask(self, owner: str, op: str, migration_id: str) -> dict[str, Any]:
        reply = f"{PREFIX}reply:{uuid.uuid4().hex}"
        request = {"op": op, "id": migration_id, "reply": reply}
        await self.redis.rpush(f"{PREFIX}rpc:{owner}", orjson.dumps(request))
        timeout = self.service.settings.cancel_wait_s + self.ttl_s + 2
        answer = await self._blpop(reply, timeout)
        if answer is None:
            raise errors.forbidden_operation(
                "cancel", f"the instance running this migration did not answer in {timeout:.0f} s"
            )
        body = orjson.loads(answer)
        if "error" in body:
            raise errors.forbidden_operation("cancel", str(body["error"]))
        return dict(body["result"])

    async def _blpop(self, key: str, timeout: float) -> str | None:
        """Pop from `key` within `timeout`: polled, not BLPOP (redis-py cannot cancel a
        blocking command cleanly: a cancelled caller would hang until it returns)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check_cancel()  # redis-py may have swallowed it
            found = await self.redis.lpop(key)
            if found is not None:
                return str(found)
            await asyncio.sleep(POLL_S)
        return None

    async def _serve_requests(self) -> None:
        """Answer the requests other instances send about our migrations (cancel)."""
        key = f"{PREFIX}rpc:{self.cluster.id}"
        handlers: set[asyncio.Task[None]] = set()
        try:
            while True:
                check_cancel()  # redis-py may have swallowed it
                try:
                    found = await self.redis.lpop(key)
                except DOWN_ERRORS:
                    check_cancel()
                    await asyncio.sleep(0.5)
                    continue
                if found is None:
                    await asyncio.sleep(POLL_S)
                    continue
                task = asyncio.create_task(self._answer(orjson.loads(found)))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
        finally:
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _answer(self, request: dict[str, Any]) -> None:
        body: dict[str, Any]
        try:
            if request.get("op") != "cancel":
                raise ValueError(f"unknown request {request.get('op')!r}")
            body = {"result": await self.service.cancel(str(request["id"]))}
        except Exception as exc:
            body = {"error": getattr(exc, "message", None) or str(exc)}
        with unless_unreachable():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(request["reply"], orjson.dumps(body))
                pipe.expire(request["reply"], 60)
                await pipe.execute()
