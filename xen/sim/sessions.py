"""Sessions of one simulated pool (xapi.md 1.5): login, logout, validity, injected expiry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xen.sim.db import XapiFailure, new_ref
from xen.sim.registry import CallContext, message

if TYPE_CHECKING:
    from xen.sim.pool import SimPool

log = logging.getLogger(__name__)

MAX_SESSIONS_PER_USER = 500  # xapi_globs max_sessions_per_user_name: oldest are destroyed


@dataclass(slots=True)
class Session:
    ref: str
    username: str
    originator: str
    created: float  # monotonic
    expires_at: float | None  # monotonic; None = never (until logout / expire_all)


class SessionStore:
    def __init__(self, pool: SimPool) -> None:
        self.pool = pool
        self._sessions: dict[str, Session] = {}
        self._by_user: dict[str, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, username: str, originator: str = "") -> str:
        ref = new_ref()
        now = time.monotonic()
        expiry = self.pool.find_fault("session_expiry")
        expires_at = None
        if expiry is not None and expiry.after_s > 0:
            expires_at = now + expiry.after_s * self.pool.timing.time_scale
        self._sessions[ref] = Session(ref, username, originator, now, expires_at)
        owned = self._by_user.setdefault(username, OrderedDict())
        owned[ref] = None
        while len(owned) > MAX_SESSIONS_PER_USER:
            oldest, _ = owned.popitem(last=False)
            self._sessions.pop(oldest, None)
        return ref

    def valid(self, ref: str) -> bool:
        session = self._sessions.get(ref)
        if session is None:
            return False
        if session.expires_at is not None and time.monotonic() >= session.expires_at:
            self.destroy(ref)
            return False
        return True

    def check(self, ref: object) -> str:
        if not isinstance(ref, str) or not self.valid(ref):
            raise XapiFailure("SESSION_INVALID", ref if isinstance(ref, str) else repr(ref))
        return ref

    def destroy(self, ref: str) -> None:
        session = self._sessions.pop(ref, None)
        if session is not None:
            self._by_user.get(session.username, OrderedDict()).pop(ref, None)

    def expire_all(self) -> None:
        self._sessions.clear()
        self._by_user.clear()

    def username(self, ref: str) -> str:
        session = self._sessions.get(ref)
        return session.username if session else ""

    async def login(self, uname: str, pwd: str, originator: str) -> str:
        pool = self.pool
        slow = pool.find_fault("login_slow")
        if slow is not None and slow.delay_s > 0:
            await asyncio.sleep(slow.delay_s * pool.timing.time_scale)
        forced_failure = pool.find_fault("login_fail") is not None
        if forced_failure or uname != pool.spec.username or pwd != pool.spec.password:
            log.info("event=login_failed pool=%s user=%s", pool.name, uname)
            # XAPI sleeps before answering a failed login, on purpose.
            await asyncio.sleep(pool.timing.login_failure_delay_s * pool.timing.time_scale)
            raise XapiFailure(
                "SESSION_AUTHENTICATION_FAILED",
                uname,
                "Authentication failure",
            )
        ref = self.create(uname, originator)
        log.debug("event=login pool=%s user=%s originator=%s", pool.name, uname, originator)
        return ref


def _pool(ctx: CallContext) -> SimPool:
    return ctx.pool  # type: ignore[return-value]


@message("session.login_with_password", min_args=2, max_args=4, asynchronous=False)
async def login_with_password(
    ctx: CallContext, uname: str, pwd: str, version: str = "1.1", originator: str = ""
) -> str:
    del version
    return await _pool(ctx).sessions.login(uname, pwd, originator)


@message("session.slave_local_login_with_password", asynchronous=False)
async def slave_local_login_with_password(ctx: CallContext, uname: str, pwd: str) -> str:
    return await _pool(ctx).sessions.login(uname, pwd, "")


@message("session.logout", asynchronous=False)
def logout(ctx: CallContext) -> None:
    _pool(ctx).sessions.destroy(ctx.session)


@message("session.local_logout", asynchronous=False)
def local_logout(ctx: CallContext) -> None:
    _pool(ctx).sessions.destroy(ctx.session)


@message("session.get_this_host", asynchronous=False)
def get_this_host(ctx: CallContext, session: str) -> str:
    _pool(ctx).sessions.check(session)
    return ctx.pool.master_ref


@message("session.get_this_user", asynchronous=False)
def get_this_user(ctx: CallContext, session: str) -> str:
    _pool(ctx).sessions.check(session)
    return "OpaqueRef:NULL"
