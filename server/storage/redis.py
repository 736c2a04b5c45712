"""The shared store: Redis (`[database] url = "redis://host:port/db"`), through redis-py's
asyncio client, for the instances of a cluster (server/cluster/).

Keys (prefix `xom:`), each record a hash of JSON-encoded fields:
- `user:<id>`, `users` (zset, creation order), `email:<email>` -> id (unique emails);
- `token:<sha256>`, `tokens` and `user-tokens:<id>` (zsets by creation time);
- `server:<id>` (password encrypted as in SQLite, server/credentials.py), `servers` (zset);
- `migration:<id>` {record, request, status, created}, `migrations` (zset by creation),
  `migrations:active` (set); the same for `batch:`.

Multi-key changes are atomic (MULTI, or a Lua script where a check decides, e.g. a unique
email). While Redis cannot be reached, reads are answered from the copy of what was last read
or written here, and writes raise StorageUnavailable; a watchdog notices when it is back and
tells the listeners (`on_reconnect`: the cluster catches up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, fields
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.credentials import CredentialCipher, CredentialsUnreadable
from server.storage.base import (
    BATCH_ACTIVE,
    MIGRATION_ACTIVE,
    EmailTaken,
    MigrationRow,
    Storage,
    StorageUnavailable,
)
from server.storage.records import AclRecord, GroupRecord, ServerRecord, TokenRecord, User

log = logging.getLogger("xo_migrate.storage")

T = TypeVar("T")
PREFIX = "xom:"
UNREACHABLE = "the shared database (Redis) is unreachable: changes are refused until it is back"
# Redis errors that mean "not reachable now" (anything else is a bug and propagates).
DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
MAX_CONNECTIONS = 64


def check_cancel() -> None:
    """Re-raise a cancellation that redis-py turned into a connection error (it catches the
    CancelledError of a command cut short): a cancelled loop must stop, not retry."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


@contextlib.contextmanager
def unless_unreachable() -> Iterator[None]:
    """Ignore Redis being unreachable (but not a cancellation)."""
    try:
        yield
    except DOWN_ERRORS:
        check_cancel()


_ADD_USER = """
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
return false
"""

# KEYS: user, new email key; ARGV: id, prefix, old email (from the stored user), fields...
_UPDATE_USER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local old = cjson.decode(redis.call('HGET', KEYS[1], 'email'))
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return owner end
redis.call('DEL', ARGV[2] .. 'email:' .. old)
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return false
"""

# Lua, the end of the scripts deleting a user or a group (`p` the prefix, `id` the subject):
# the ACL entries whose subject it is go with it.
_DROP_SUBJECT_ACLS = """
for _, a in ipairs(redis.call('SMEMBERS', p .. 'subject-acls:' .. id)) do
  redis.call('DEL', p .. 'acl:' .. a)
  redis.call('ZREM', p .. 'acls', a)
end
redis.call('DEL', p .. 'subject-acls:' .. id)
return 1
"""

_DELETE_USER = (
    """
local p = ARGV[1]
local id = ARGV[2]
local key = p .. 'user:' .. id
if redis.call('EXISTS', key) == 0 then return 0 end
local email = cjson.decode(redis.call('HGET', key, 'email'))
redis.call('DEL', p .. 'email:' .. email, key)
redis.call('ZREM', p .. 'users', id)
for _, h in ipairs(redis.call('ZRANGE', p .. 'user-tokens:' .. id, 0, -1)) do
  redis.call('DEL', p .. 'token:' .. h)
  redis.call('ZREM', p .. 'tokens', h)
end
redis.call('DEL', p .. 'user-tokens:' .. id)
for _, g in ipairs(redis.call('ZRANGE', p .. 'user-groups:' .. id, 0, -1)) do
  redis.call('ZREM', p .. 'group-users:' .. g, id)
end
redis.call('DEL', p .. 'user-groups:' .. id)
"""
    + _DROP_SUBJECT_ACLS
)

# ARGV: prefix, group id.
_DELETE_GROUP = (
    """
local p, id = ARGV[1], ARGV[2]
redis.call('DEL', p .. 'group:' .. id)
redis.call('ZREM', p .. 'groups', id)
for _, u in ipairs(redis.call('ZRANGE', p .. 'group-users:' .. id, 0, -1)) do
  redis.call('ZREM', p .. 'user-groups:' .. u, id)
end
redis.call('DEL', p .. 'group-users:' .. id)
"""
    + _DROP_SUBJECT_ACLS
)

# ARGV: prefix, group id, the wanted user ids in order: members leaving go, those staying
# keep their place (score), new ones join at the end.
_SET_GROUP_USERS = """
local p, g = ARGV[1], ARGV[2]
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
for _, u in ipairs(redis.call('ZRANGE', p .. 'group-users:' .. g, 0, -1)) do
  if not wanted[u] then
    redis.call('ZREM', p .. 'group-users:' .. g, u)
    redis.call('ZREM', p .. 'user-groups:' .. u, g)
  end
end
for i = 3, #ARGV do
  local u = ARGV[i]
  if not redis.call('ZSCORE', p .. 'group-users:' .. g, u) then
    local seq = redis.call('INCR', p .. 'seq')
    redis.call('ZADD', p .. 'group-users:' .. g, seq, u)
    redis.call('ZADD', p .. 'user-groups:' .. u, seq, g)
  end
end
return 1
"""

# ARGV: prefix, id, subject, object, action.
_ADD_ACL = """
local p, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', p .. 'acl:' .. id) == 1 then return 0 end
redis.call('HSET', p .. 'acl:' .. id, 'id', id, 'subject', ARGV[3], 'object', ARGV[4], 'action', ARGV[5])
redis.call('ZADD', p .. 'acls', redis.call('INCR', p .. 'seq'), id)
redis.call('SADD', p .. 'subject-acls:' .. ARGV[3], id)
return 1
"""

# ARGV: prefix, ids...
_DELETE_ACLS = """
local p, n = ARGV[1], 0
for i = 2, #ARGV do
  local subject = redis.call('HGET', p .. 'acl:' .. ARGV[i], 'subject')
  if subject then
    redis.call('DEL', p .. 'acl:' .. ARGV[i])
    redis.call('ZREM', p .. 'acls', ARGV[i])
    redis.call('SREM', p .. 'subject-acls:' .. subject, ARGV[i])
    n = n + 1
  end
end
return n
"""

# Change fields of an existing hash only (a concurrent delete wins).
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# ARGV: prefix, kind ("migration" | "batch"), fence ("" or this instance's id), lease ms, then
# per record: id, status, created, record, request ("" for batches), active ("1" | "0").
# With a fence (a cluster): a migration leased by another instance is not written (that
# instance owns it now); an active one without a lease is leased to us, an ended one of ours
# gives its lease up.
_SAVE_RECORDS = """
local p, kind, me, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = 0
for i = 5, #ARGV, 6 do
  local id = ARGV[i]
  local lease_key = p .. 'lease:' .. id
  local lease = false
  if me ~= '' then lease = redis.call('GET', lease_key) end
  if (not lease) or lease == me then
    local key = p .. kind .. ':' .. id
    redis.call('HSET', key, 'record', ARGV[i + 3], 'status', ARGV[i + 1])
    if ARGV[i + 4] ~= '' then redis.call('HSETNX', key, 'request', ARGV[i + 4]) end
    redis.call('ZADD', p .. kind .. 's', ARGV[i + 2], id)
    if ARGV[i + 5] == '1' then
      redis.call('SADD', p .. kind .. 's:active', id)
      if me ~= '' and not lease then redis.call('SET', lease_key, me, 'PX', ttl) end
    else
      redis.call('SREM', p .. kind .. 's:active', id)
      if me ~= '' and lease == me then redis.call('DEL', lease_key) end
    end
    n = n + 1
  end
end
return n
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _encode(obj: Any, *leave_out: str) -> dict[str, str]:
    return {name: _dumps(value) for name, value in asdict(obj).items() if name not in leave_out}


def _user(raw: dict[str, str], groups: list[str]) -> User:
    """A user from its hash; its groups are its memberships (`user-groups:<id>`)."""
    values = _decode(raw)
    values["groups"] = list(groups)
    return User(**values)


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    return {name: orjson.loads(value) for name, value in raw.items()}


class RedisStorage(Storage):
    kind = "redis"
    shared = True

    def __init__(self, url: str, cipher: CredentialCipher) -> None:
        self.url = url
        self._cipher = cipher
        # Any: with decode_responses every reply is str, which redis-py's types do not say.
        # A bounded pool: a burst of calls (300 sign-ins at once) waits for a connection
        # instead of opening hundreds of them.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=5,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
        )
        self.redis: Any = aioredis.Redis(
            connection_pool=pool,
            retry=Retry(NoBackoff(), 0),  # fail fast: the caller decides what to do
        )
        self.fence = ""  # this instance's id once in a cluster: leases fence its writes
        self.lease_ms = 5000
        self._up = True
        self._copy: dict[tuple[str, ...], Any] = {}
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.on_disconnect: list[Callable[[], None]] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._add_user = self.redis.register_script(_ADD_USER)
        self._update_user = self.redis.register_script(_UPDATE_USER)
        self._delete_user = self.redis.register_script(_DELETE_USER)
        self._hset_if_exists = self.redis.register_script(_HSET_IF_EXISTS)
        self._save_records = self.redis.register_script(_SAVE_RECORDS)
        self._delete_group = self.redis.register_script(_DELETE_GROUP)
        self._set_group_users = self.redis.register_script(_SET_GROUP_USERS)
        self._add_acl = self.redis.register_script(_ADD_ACL)
        self._delete_acls = self.redis.register_script(_DELETE_ACLS)

    async def open(self) -> None:
        """Connect (raises StorageUnavailable with the reason) and watch the connection."""
        try:
            await self.redis.ping()
        except DOWN_ERRORS as exc:
            check_cancel()
            raise StorageUnavailable(f"cannot reach Redis at {self.url}: {exc}") from None
        self._watchdog = asyncio.create_task(self._watch(), name="redis-watchdog")

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        await self.redis.aclose()

    @property
    def available(self) -> bool:
        return self._up

    def check_writable(self) -> None:
        if not self._up:
            raise StorageUnavailable(UNREACHABLE)

    # -- reachability --------------------------------------------------------------------------

    def went_down(self, exc: BaseException) -> None:
        if self._up:
            self._up = False
            log.warning("event=redis_unreachable error=%s", str(exc).replace(" ", "_")[:120])
            for listener in self.on_disconnect:
                listener()

    async def _watch(self) -> None:
        """Ping twice a second: notice a loss between calls, and the return."""
        while True:
            check_cancel()  # redis-py may have swallowed it
            await asyncio.sleep(0.5)
            try:
                await self.redis.ping()
            except DOWN_ERRORS as exc:
                check_cancel()
                self.went_down(exc)
                continue
            if not self._up:
                self._up = True
                log.info("event=redis_reachable")
                for listener in self.on_reconnect:
                    try:
                        await listener()
                    except DOWN_ERRORS as exc:
                        check_cancel()
                        self.went_down(exc)
                        break

    async def _read(self, key: tuple[str, ...], fetch: Callable[[], Awaitable[T]]) -> T:
        """A read from Redis, kept; from the kept copy while Redis cannot be reached (without
        trying it: the watchdog says when it is back)."""
        if not self._up and key in self._copy:
            return self._copy[key]  # type: ignore[no-any-return]
        try:
            value = await fetch()
        except DOWN_ERRORS as exc:
            check_cancel()
            self.went_down(exc)
            if key in self._copy:
                return self._copy[key]  # type: ignore[no-any-return]
            raise StorageUnavailable(UNREACHABLE) from None
        self._copy[key] = value
        return value

    async def _write(self, write: Callable[[], Awaitable[T]]) -> T:
        self.check_writable()
        try:
            return await write()
        except DOWN_ERRORS as exc:
            check_cancel()
            self.went_down(exc)
            raise StorageUnavailable(UNREACHABLE) from None

    def _forget(self, *kinds: str) -> None:
        """Drop kept reads of these kinds: a write here changed them."""
        for key in [k for k in self._copy if k[0] in kinds]:
            del self._copy[key]

    # -- users -------------------------------------------------------------------------------

    async def count_users(self) -> int:
        return await self._read(("count_users",), lambda: self.redis.zcard(PREFIX + "users"))

    async def add_user(self, user: User) -> None:
        encoded = _encode(user, "groups")
        args = [user.id, *[x for kv in encoded.items() for x in kv]]
        keys = [PREFIX + "email:" + user.email, PREFIX + "user:" + user.id, PREFIX + "users"]
        owner = await self._write(lambda: self._add_user([*keys, PREFIX + "seq"], args))
        if owner is not None:
            raise EmailTaken(owner)
        self._forget("users", "count_users", "user_exists")

    async def _user(self, key: str) -> User | None:
        user_id = key[len(PREFIX + "user:") :]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.zrange(PREFIX + "user-groups:" + user_id, 0, -1)
            raw, groups = await pipe.execute()
        return _user(raw, groups) if raw else None

    async def user_by_email(self, email: str) -> User | None:
        async def fetch() -> User | None:
            user_id = await self.redis.get(PREFIX + "email:" + email)
            return None if user_id is None else await self._user(PREFIX + "user:" + user_id)

        return await self._read(("user_email", email), fetch)

    async def user_by_id(self, user_id: str) -> User | None:
        return await self._read(("user", user_id), lambda: self._user(PREFIX + "user:" + user_id))

    async def all_users(self) -> list[User]:
        async def fetch() -> list[User]:
            ids = await self.redis.zrange(PREFIX + "users", 0, -1)
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    pipe.hgetall(PREFIX + "user:" + user_id)
                    pipe.zrange(PREFIX + "user-groups:" + user_id, 0, -1)
                rows = await pipe.execute()
            return [
                _user(raw, groups) for raw, groups in zip(rows[::2], rows[1::2], strict=True) if raw
            ]

        return await self._read(("users",), fetch)

    async def update_user(self, user: User) -> None:
        encoded = _encode(user, "groups")
        args = [user.id, PREFIX, *[x for kv in encoded.items() for x in kv]]
        keys = [PREFIX + "user:" + user.id, PREFIX + "email:" + user.email]
        owner = await self._write(lambda: self._update_user(keys, args))
        if owner is not None:
            raise EmailTaken(owner)
        self._forget("users", "user", "user_email")

    async def delete_user(self, user_id: str) -> bool:
        deleted = await self._write(lambda: self._delete_user([], [PREFIX, user_id]))
        self._forget("users", "user", "user_email", "user_exists", "count_users", "groups")
        self._forget("tokens", "token")
        self._forget("acls")
        return bool(deleted)

    async def user_exists(self, user_id: str) -> bool:
        return bool(
            await self._read(
                ("user_exists", user_id), lambda: self.redis.exists(PREFIX + "user:" + user_id)
            )
        )

    # -- groups and ACL entries --------------------------------------------------------------

    async def groups(self) -> list[GroupRecord]:
        async def fetch() -> list[GroupRecord]:
            ids = await self.redis.zrange(PREFIX + "groups", 0, -1)
            async with self.redis.pipeline(transaction=False) as pipe:
                for group_id in ids:
                    pipe.hget(PREFIX + "group:" + group_id, "name")
                    pipe.zrange(PREFIX + "group-users:" + group_id, 0, -1)
                rows = await pipe.execute()
            return [
                GroupRecord(group_id, name, list(users))
                for group_id, name, users in zip(ids, rows[::2], rows[1::2], strict=True)
                if name is not None
            ]

        return await self._read(("groups",), fetch)

    async def _change_groups(self, write: Callable[[], Awaitable[Any]]) -> None:
        await self._write(write)
        self._forget("groups", "users", "user", "user_email", "acls")

    async def add_group(self, group: GroupRecord) -> None:
        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    PREFIX + "group:" + group.id, mapping={"id": group.id, "name": group.name}
                )
                pipe.zadd(PREFIX + "groups", {group.id: time.time()})
                await pipe.execute()

        await self._change_groups(write)
        if group.users:
            await self.set_group_users(group.id, group.users)

    async def rename_group(self, group_id: str, name: str) -> None:
        key = PREFIX + "group:" + group_id
        await self._change_groups(lambda: self._hset_if_exists([key], ["name", name]))

    async def delete_group(self, group_id: str) -> None:
        await self._change_groups(lambda: self._delete_group([], [PREFIX, group_id]))

    async def set_group_users(self, group_id: str, user_ids: list[str]) -> None:
        args = [PREFIX, group_id, *user_ids]
        await self._change_groups(lambda: self._set_group_users([], args))

    async def acls(self) -> list[AclRecord]:
        async def fetch() -> list[AclRecord]:
            ids = await self.redis.zrange(PREFIX + "acls", 0, -1)
            async with self.redis.pipeline(transaction=False) as pipe:
                for acl_id in ids:
                    pipe.hmget(PREFIX + "acl:" + acl_id, ["id", "subject", "object", "action"])
                rows = await pipe.execute()
            return [AclRecord(*row) for row in rows if row[0] is not None]

        return await self._read(("acls",), fetch)

    async def add_acl(self, acl: AclRecord) -> bool:
        args = [PREFIX, acl.id, acl.subject, acl.object, acl.action]
        added = await self._write(lambda: self._add_acl([], args))
        self._forget("acls")
        return bool(added)

    async def delete_acls(self, ids: list[str]) -> int:
        if not ids:
            return 0
        count = await self._write(lambda: self._delete_acls([], [PREFIX, *ids]))
        self._forget("acls")
        return int(count)

    # -- tokens ------------------------------------------------------------------------------

    async def add_token(self, rec: TokenRecord) -> None:
        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(PREFIX + "token:" + rec.hash, mapping=_encode(rec))
                pipe.zadd(PREFIX + "user-tokens:" + rec.user_id, {rec.hash: rec.created_at})
                pipe.zadd(PREFIX + "tokens", {rec.hash: rec.created_at})
                await pipe.execute()

        await self._write(write)
        self._forget("tokens")

    async def _tokens(self, hashes: list[str]) -> list[TokenRecord]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for h in hashes:
                pipe.hgetall(PREFIX + "token:" + h)
            rows = await pipe.execute()
        return [TokenRecord(**_decode(raw)) for raw in rows if raw]

    async def token(self, token_hash: str) -> TokenRecord | None:
        async def fetch() -> TokenRecord | None:
            found = await self._tokens([token_hash])
            return found[0] if found else None

        return await self._read(("token", token_hash), fetch)

    async def tokens_of(self, user_id: str | None = None) -> list[TokenRecord]:
        key = PREFIX + ("tokens" if user_id is None else "user-tokens:" + user_id)

        async def fetch() -> list[TokenRecord]:
            return await self._tokens(await self.redis.zrange(key, 0, -1))

        return await self._read(("tokens", user_id or ""), fetch)

    async def count_live_tokens(self, user_id: str, now: float) -> int:
        return sum(1 for rec in await self.tokens_of(user_id) if rec.expiration > now)

    async def client_token(self, user_id: str, client_id: str) -> TokenRecord | None:
        mine = [rec for rec in await self.tokens_of(user_id) if rec.client_id == client_id]
        return max(mine, key=lambda rec: rec.expiration) if mine else None

    async def _change_token(self, token_hash: str, **changes: Any) -> None:
        args = [x for name, value in changes.items() for x in (name, _dumps(value))]
        await self._write(lambda: self._hset_if_exists([PREFIX + "token:" + token_hash], args))
        self._forget("tokens", "token")

    async def refresh_token(
        self, token_hash: str, expiration: float, description: str | None
    ) -> None:
        await self._change_token(token_hash, expiration=expiration, description=description)

    async def touch_token(self, token_hash: str, last_uses: dict[str, Any]) -> None:
        await self._change_token(token_hash, last_uses=last_uses)

    async def delete_tokens(self, hashes: list[str]) -> int:
        if not hashes:
            return 0
        recs = await self._tokens(hashes)

        async def write() -> int:
            async with self.redis.pipeline(transaction=True) as pipe:
                for rec in recs:
                    pipe.delete(PREFIX + "token:" + rec.hash)
                    pipe.zrem(PREFIX + "user-tokens:" + rec.user_id, rec.hash)
                    pipe.zrem(PREFIX + "tokens", rec.hash)
                results = await pipe.execute()
            return sum(int(r) for r in results[::3])

        count = await self._write(write)
        self._forget("tokens", "token")
        return count

    async def delete_expired_tokens(self, now: float) -> int:
        expired = [rec.hash for rec in await self.tokens_of() if rec.expiration <= now]
        return await self.delete_tokens(expired)

    # -- servers -----------------------------------------------------------------------------

    def _server(self, raw: dict[str, str]) -> ServerRecord:
        values = _decode(raw)
        stored = values.pop("password", "")
        values.pop("credentials_error", None)
        rec = ServerRecord(**values, password="")
        try:
            rec.password = self._cipher.decrypt(stored)
        except CredentialsUnreadable as exc:
            rec.credentials_error = str(exc)
        return rec

    async def servers(self) -> list[ServerRecord]:
        async def fetch() -> list[ServerRecord]:
            ids = await self.redis.zrange(PREFIX + "servers", 0, -1)
            async with self.redis.pipeline(transaction=False) as pipe:
                for server_id in ids:
                    pipe.hgetall(PREFIX + "server:" + server_id)
                rows = await pipe.execute()
            return [self._server(raw) for raw in rows if raw]

        return await self._read(("servers",), fetch)

    async def server(self, server_id: str) -> ServerRecord | None:
        async def fetch() -> ServerRecord | None:
            raw = await self.redis.hgetall(PREFIX + "server:" + server_id)
            return self._server(raw) if raw else None

        return await self._read(("server", server_id), fetch)

    def _server_fields(self, rec: ServerRecord, *, password: bool) -> dict[str, str]:
        values = {f.name: getattr(rec, f.name) for f in fields(rec) if f.name != "password"}
        del values["credentials_error"]
        if password:
            values["password"] = self._cipher.encrypt(rec.password)
        return {name: _dumps(value) for name, value in values.items()}

    async def add_server(self, rec: ServerRecord) -> None:
        created = rec.created_at or time.time()
        mapping = self._server_fields(rec, password=True) | {"created_at": _dumps(created)}

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(PREFIX + "server:" + rec.id, mapping=mapping)
                pipe.zadd(PREFIX + "servers", {rec.id: created})
                await pipe.execute()

        await self._write(write)
        self._forget("servers", "server")

    async def update_server(self, rec: ServerRecord) -> None:
        # The password is unknown with credentials_error: the stored one is kept.
        mapping = self._server_fields(rec, password=not rec.credentials_error)
        mapping.pop("created_at")
        args = [x for kv in mapping.items() for x in kv]
        await self._write(lambda: self._hset_if_exists([PREFIX + "server:" + rec.id], args))
        self._forget("servers", "server")

    async def remove_server(self, server_id: str) -> bool:
        async def write() -> bool:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(PREFIX + "server:" + server_id)
                pipe.zrem(PREFIX + "servers", server_id)
                deleted, _ = await pipe.execute()
            return bool(deleted)

        removed = await self._write(write)
        self._forget("servers", "server")
        return removed

    # -- migrations and batches ----------------------------------------------------------------

    async def _save(
        self, kind: str, rows: list[tuple[dict[str, Any], str]], active: tuple[str, ...]
    ) -> None:
        if not rows:
            return
        fence = self.fence if kind == "migration" else ""
        args: list[Any] = [PREFIX, kind, fence, self.lease_ms]
        for record, request in rows:
            args += [
                record["id"],
                record["status"],
                repr(float(record["created"])),
                _dumps(record),
                request,
                "1" if record["status"] in active else "0",
            ]
        await self._write(lambda: self._save_records([], args))
        self._forget(kind)

    async def _records(self, kind: str, ids: list[str], *names: str) -> list[list[str | None]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for record_id in ids:
                pipe.hmget(f"{PREFIX}{kind}:{record_id}", list(names))
            return list(await pipe.execute())

    async def _active(self, kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        async def fetch() -> list[tuple[dict[str, Any], dict[str, Any]]]:
            ids = list(await self.redis.smembers(f"{PREFIX}{kind}s:active"))
            rows = await self._records(kind, ids, "record", "request")
            out = [
                (orjson.loads(record), orjson.loads(request or "{}"))
                for record, request in rows
                if record is not None
            ]
            out.sort(key=lambda pair: pair[0]["created"])
            return out

        return await self._read((kind, "active"), fetch)

    async def _recent(self, kind: str, limit: int) -> list[dict[str, Any]]:
        async def fetch() -> list[dict[str, Any]]:
            if limit <= 0:
                return []
            ids = await self.redis.zrevrange(f"{PREFIX}{kind}s", 0, limit - 1)
            rows = await self._records(kind, ids, "record")
            return [orjson.loads(r) for (r,) in rows if r is not None]

        return await self._read((kind, "recent", str(limit)), fetch)

    async def _one(self, kind: str, record_id: str) -> dict[str, Any] | None:
        async def fetch() -> dict[str, Any] | None:
            raw = await self.redis.hget(f"{PREFIX}{kind}:{record_id}", "record")
            return orjson.loads(raw) if raw is not None else None

        return await self._read((kind, "one", record_id), fetch)

    async def _prune(self, kind: str, keep: int) -> None:
        async def write() -> None:
            ids = await self.redis.zrevrange(f"{PREFIX}{kind}s", 0, -1)
            active = await self.redis.smembers(f"{PREFIX}{kind}s:active")
            finished = [i for i in ids if i not in active]
            doomed = finished[keep:]
            if not doomed:
                return
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(*(f"{PREFIX}{kind}:{i}" for i in doomed))
                pipe.zrem(f"{PREFIX}{kind}s", *doomed)
                await pipe.execute()

        await self._write(write)
        self._forget(kind)

    async def save_migrations(self, rows: list[MigrationRow]) -> None:
        encoded = [(r, q if isinstance(q, str) else _dumps(q)) for r, q in rows]
        await self._save("migration", encoded, MIGRATION_ACTIVE)

    async def active_migrations(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return await self._active("migration")

    async def recent_migrations(self, limit: int) -> list[dict[str, Any]]:
        return await self._recent("migration", limit)

    async def migration(self, migration_id: str) -> dict[str, Any] | None:
        return await self._one("migration", migration_id)

    async def prune_migrations(self, keep: int) -> None:
        await self._prune("migration", keep)

    async def save_batches(self, records: list[dict[str, Any]]) -> None:
        await self._save("batch", [(r, "") for r in records], BATCH_ACTIVE)

    async def active_batches(self) -> list[dict[str, Any]]:
        return [record for record, _ in await self._active("batch")]

    async def recent_batches(self, limit: int) -> list[dict[str, Any]]:
        return await self._recent("batch", limit)

    async def batch(self, batch_id: str) -> dict[str, Any] | None:
        return await self._one("batch", batch_id)

    async def prune_batches(self, keep: int) -> None:
        await self._prune("batch", keep)


async def flush_all(url: str) -> None:
    """Empty the database of `url` (tests)."""
    client = aioredis.Redis.from_url(url)
    with unless_unreachable():
        await client.flushdb()
    await client.aclose()
