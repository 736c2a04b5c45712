"""Several xo-migrate instances sharing one Redis (`[database] url = "redis://..."`).

Each instance connects to every pool and keeps its own object cache; what they share goes
through Redis (server/storage/redis.py for what is stored):
- events on one pub/sub channel (`xom:events`, JSON): a migration object changed (every
  instance's clients see every migration), tokens revoked or a user deleted (their
  connections close everywhere), a user changed, the pools changed (every instance connects
  to the same pools), the queue changed, a lease was given up;
- migrations (server/cluster/migrations.py): leases, adoption of a dead instance's
  migrations, `migration.cancel` on the owner, `migration.wait` anywhere;
- the admission queue (server/cluster/queue.py).

The instances must share `secret.key` (token HMACs, the pool password key): the first one
stores a fingerprint of its secret in Redis, and an instance with another secret refuses to
start, saying which file to copy.

An instance that loses Redis keeps answering reads from its caches and refuses changes
(server/storage/redis.py); its leases lapse, so another instance that still reaches Redis
takes its migrations over. When Redis is back it subscribes again and catches up: the
migration objects are reloaded, orphaned migrations adopted, the queue pumped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson

from server import datadir
from server.storage.redis import DOWN_ERRORS, PREFIX, RedisStorage, check_cancel, unless_unreachable

if TYPE_CHECKING:
    from server.cluster.migrations import ClusterMigrations
    from server.cluster.queue import SharedQueue
    from server.migrations.service import MigrationService
    from server.migrations.settings import MigrationSettings
    from server.state import ServerState

log = logging.getLogger("xo_migrate.cluster")

CHANNEL = PREFIX + "events"
SECRET_CHECK = PREFIX + "secret-check"
Handler = Callable[[dict[str, Any]], Any]


class Cluster:
    def __init__(self, state: ServerState, storage: RedisStorage) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.state = state
        self.storage = storage
        self.redis = storage.redis
        self.lease_ttl_s = state.config.database.lease_ttl_s
        storage.fence = self.id
        storage.lease_ms = int(self.lease_ttl_s * 1000)
        self._handlers: dict[str, Handler] = {
            "revoked": self._on_revoked,
            "user": self._on_user,
            "servers": self._on_servers,
            "acl": self._on_acl,
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbox: list[bytes] = []
        self._send = asyncio.Event()
        self.queue: SharedQueue | None = None
        self.migrations: ClusterMigrations | None = None
        self.subscribed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def check_secret(self) -> None:
        """Every instance must have the same secret.key: refuse to start otherwise."""
        state = self.state
        mine = hmac.new(state.secret, b"xo-migrate cluster secret check", hashlib.sha256)
        fingerprint = mine.hexdigest()
        await self.redis.set(SECRET_CHECK, fingerprint, nx=True)
        theirs = await self.redis.get(SECRET_CHECK)
        key = state.config.data_dir / datadir.SECRET_NAME
        if theirs != fingerprint:
            what = "has no secret.key" if state.new_secret else f"{key} differs from theirs"
            raise datadir.DataDirError(
                f"the other instances sharing {self.storage.url} use another secret: this"
                f" instance {what}; copy secret.key from one of them to {key}"
            )
        if state.new_secret:
            datadir.keep_secret(state.config.data_dir, state.secret)
            state.new_secret = False

    async def start(self, state: ServerState) -> None:
        """Subscribe and publish from now on (after the pools are added)."""
        self.spawn(self._listen(), "cluster-listen")
        self.spawn(self._publish(), "cluster-publish")
        self.storage.on_reconnect.append(self._caught_up)
        state.acl.on_stored = lambda: self.emit("acl")
        async with asyncio.timeout(5):
            await self.subscribed.wait()
        log.info("event=cluster_joined instance=%s", self.id)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A task of the cluster's (cancelled and awaited by `aclose`)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events ----------------------------------------------------------------------------

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def emit(self, kind: str, **body: Any) -> None:
        """Publish an event to the other instances (in order, by one task)."""
        self._outbox.append(orjson.dumps({"kind": kind, "from": self.id, **body}))
        self._send.set()

    async def _publish(self) -> None:
        while True:
            check_cancel()  # redis-py may have swallowed it
            await self._send.wait()
            self._send.clear()
            frames, self._outbox = self._outbox, []
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for frame in frames:
                        pipe.publish(CHANNEL, frame)
                    await pipe.execute()
            except DOWN_ERRORS:
                check_cancel()
                # Lost with Redis: the others catch up from the store when it is back.
                await asyncio.sleep(0.5)

    async def _listen(self) -> None:
        while True:
            check_cancel()  # redis-py may have swallowed it
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self.subscribed.set()
                while True:
                    check_cancel()  # redis-py may have swallowed it
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._dispatch(message["data"])
            except DOWN_ERRORS:
                check_cancel()
                self.subscribed.clear()
                await asyncio.sleep(0.5)
            finally:
                with unless_unreachable():
                    await pubsub.aclose()

    async def _dispatch(self, data: str) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if event.get("from") == self.id:
            return
        handler = self._handlers.get(event.get("kind", ""))
        if handler is None:
            return
        try:
            result = handler(event)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("event=cluster_event_failed kind=%s", event.get("kind"))

    async def _caught_up(self) -> None:
        """Redis is back: what this instance may have missed."""
        log.info("event=cluster_catch_up instance=%s", self.id)
        await self._on_servers({})
        await self._on_acl({})
        if self.migrations is not None:
            await self.migrations.catch_up()
        if self.queue is not None:
            self.queue.poke()

    # -- users and tokens --------------------------------------------------------------------

    async def revoked(self, hashes: set[str], *, user_id: str | None = None) -> None:
        """Tokens deleted (or a user: all its connections): close their connections on the
        other instances too."""
        self.emit("revoked", hashes=sorted(hashes), user=user_id)

    async def _on_revoked(self, event: dict[str, Any]) -> None:
        from server.users import close_connections

        hashes, user_id = set(event.get("hashes") or ()), event.get("user")

        def which(conn: Any) -> bool:
            if conn.token_hash is not None and conn.token_hash in hashes:
                return True
            return user_id is not None and conn.user is not None and conn.user.id == user_id

        closed = await close_connections(self.state, which, caller=None)
        if closed:
            log.info("event=remote_revocation connections_closed=%d", closed)

    async def user_changed(self, user_id: str) -> None:
        self.emit("user", id=user_id)

    async def _on_user(self, event: dict[str, Any]) -> None:
        from server.users import refresh_user

        user = await self.storage.user_by_id(str(event.get("id")))
        if user is not None:
            refresh_user(self.state, user)

    async def _on_acl(self, _event: dict[str, Any]) -> None:
        """Groups or ACL entries changed elsewhere: reload them; the connected users whose
        rights or groups changed get their new view."""
        from server.users import reload_users

        users = await self.state.acl.load()
        connected = {c.user.id for c in self.state.connections if c.user is not None}
        await reload_users(self.state, users & connected)

    # -- pools -------------------------------------------------------------------------------

    async def servers_changed(self) -> None:
        self.emit("servers")

    async def _on_servers(self, _event: dict[str, Any]) -> None:
        """Connect to the pools as stored: every instance follows the same pools."""
        pools = self.state.pools
        if pools is None:
            return
        stored = {rec.id: rec for rec in await self.storage.servers()}
        running = {s["id"]: s for s in pools.statuses()}
        for server_id in running.keys() - stored.keys():
            await pools.remove(server_id)
        for server_id, rec in stored.items():
            cfg = rec.to_pool_config()
            current = pools.config(server_id)
            if server_id not in running:
                await pools.add(cfg)
            elif current is not None and current != cfg:
                await pools.remove(server_id)
                await pools.add(cfg)

    # -- migrations ------------------------------------------------------------------------

    def admission_queue(self, settings: MigrationSettings) -> SharedQueue:
        from server.cluster.queue import SharedQueue

        queue = SharedQueue(
            self.storage,
            settings.per_pool_limit,
            settings.per_host_limit,
            lambda: self.emit("queue"),
            self.id,
            int(self.lease_ttl_s * 1000),
        )
        self.on("queue", lambda _event: queue.poke())
        self.queue = queue
        queue.start()
        return queue

    async def follow_migrations(self, service: MigrationService) -> None:
        from server.cluster.migrations import ClusterMigrations

        self.migrations = ClusterMigrations(self, service)
        await self.migrations.start()

    async def unfollow_migrations(self, service: MigrationService) -> None:
        """Stop renewing, stop the service (its last records written), give the leases up
        so another instance adopts at once, not after the lease TTL."""
        if self.migrations is not None:
            await self.migrations.stop(service)
            self.migrations = None
        if self.queue is not None:
            await self.queue.aclose()
            self.queue = None


@contextlib.asynccontextmanager
async def cluster_of(state: ServerState) -> AsyncIterator[Cluster]:
    assert isinstance(state.storage, RedisStorage)
    cluster = Cluster(state, state.storage)
    await cluster.check_secret()
    try:
        yield cluster
    finally:
        await cluster.aclose()
