"""event.from / event.inject / event.get_current_id (xapi.md 4.2).

Long-polls wait on the pool database's change signal, so any number of them cost nothing
while idle and never hold up other calls.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from xen.sim.codec import I4
from xen.sim.db import Database, XapiFailure
from xen.sim.registry import CallContext, message

if TYPE_CHECKING:
    from xen.sim.pool import SimPool

_TOKEN = re.compile(r"(\d+)(?:,(\d+))?")
MAX_TIMEOUT_S = 3600.0


def make_token(generation: int) -> str:
    # DB generation, then the message generation (messages live in the DB here).
    return f"{generation:020d},{0:020d}"


def parse_token(token: str) -> int:
    if token == "":
        return 0
    m = _TOKEN.fullmatch(token.strip())
    if m is None:
        raise XapiFailure("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
    return int(m.group(1))


def parse_subscriptions(db: Database, classes: list[str]) -> tuple[set[str] | None, set[str]]:
    """(canonical classes or None for "*", single refs). Unknown classes never match."""
    wanted: set[str] = set()
    refs: set[str] = set()
    everything = False
    for sub in classes:
        if sub == "*":
            everything = True
            continue
        name, slash, ref = sub.partition("/")
        if not name or (slash and (not ref or "/" in ref)):
            raise XapiFailure("EVENT_SUBSCRIPTION_PARSE_FAILURE", sub)
        canonical = db.schema.canonical(name)
        if canonical is None:
            continue
        if slash:
            refs.add(ref)
        else:
            wanted.add(canonical)
    return (None if everything else wanted), refs


def event_batch(db: Database, since: int, classes: set[str] | None, refs: set[str]) -> list[Any]:
    out: list[dict[str, Any]] = []
    # Live snapshots: the batch is encoded before anything else runs on the loop.
    for ev in db.events_since(since, classes, refs, copy_snapshots=False):
        item: dict[str, Any] = {
            "id": str(ev.id),
            "timestamp": "0.0",
            "class": ev.cls.lower(),
            "operation": ev.operation,
            "ref": ev.ref,
        }
        if ev.snapshot is not None:  # absent on "del"
            item["snapshot"] = ev.snapshot
        out.append(item)
    return out


def _pool(ctx: CallContext) -> SimPool:
    return ctx.pool  # type: ignore[return-value]


@message("event.from", asynchronous=False)
async def event_from(
    ctx: CallContext, classes: list[str], token: str, timeout: float
) -> dict[str, Any]:
    pool = _pool(ctx)
    db = ctx.db
    since = parse_token(token)
    wanted, refs = parse_subscriptions(db, classes)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(0.0, timeout), MAX_TIMEOUT_S)
    # Everything up to `scanned` has been looked at and nothing matched: later scans can
    # start there (no object changes class, so nothing earlier can start to match).
    scanned = since
    events: list[Any] = []
    while True:
        if db.generation > scanned:
            if scanned == since:
                events = event_batch(db, since, wanted, refs)
            elif _any_new(db, scanned, wanted, refs):
                events = event_batch(db, since, wanted, refs)  # coalesced from the token
            if events:
                break
            scanned = db.generation
        remaining = deadline - loop.time()
        if remaining <= 0 or pool.closing:
            break
        if await db.wait_for_change(db.generation, remaining) and not pool.closing:
            # Let a burst of changes land in one batch (xapi waits 50 ms too).
            await asyncio.sleep(min(pool.event_batch_delay_s, max(0.0, deadline - loop.time())))
        pool.sessions.check(ctx.session)  # a logout during the wait ends the call
    return {
        "events": events,
        "valid_ref_counts": {k: I4(v) for k, v in db.valid_ref_counts().items()},
        "token": make_token(db.generation),
    }


def _any_new(db: Database, after: int, wanted: set[str] | None, refs: set[str]) -> bool:
    return bool(db.events_since(after, wanted, refs, copy_snapshots=False))


@message("event.inject", asynchronous=False)
def event_inject(ctx: CallContext, cls: str, ref: str) -> str:
    canonical = ctx.db.schema.canonical(cls)
    if canonical is None or not ctx.db.exists(canonical, ref):
        raise XapiFailure("HANDLE_INVALID", cls, ref)
    ctx.db.update(canonical, ref)  # a no-op write still bumps the object's generation
    return make_token(ctx.db.generation - 1)


@message("event.get_current_id", asynchronous=False)
def event_get_current_id(ctx: CallContext) -> int:
    return ctx.db.generation
