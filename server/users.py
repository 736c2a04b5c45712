"""User accounts (xo-server's subjects.mjs behaviour) and the API connections that use them.

- Emails are unique: a duplicate is `objectAlreadyExists` (code 16) naming the existing user.
- Passwords are hashed with scrypt (server/passwords.py) in the hasher's threads; never logged.
- Deleting a user deletes its tokens (ON DELETE CASCADE) and closes its open connections;
  deleting a token closes the connections signed in with it. A new password (reset by an
  admin or changed by the user) deletes the user's tokens and closes its other connections:
  whoever held the old password or a token is out.
- A connection holds its user object; after an update the user's connections get the new one,
  so a permission change applies from their next call (xo-server reloads the user per call),
  and to what the push hub sends them. Deleting a user deletes its group memberships and ACL
  entries too (xo-server).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import orjson

from server import errors
from server.limits import invalid_value
from server.storage import EmailTaken
from server.storage.records import User

if TYPE_CHECKING:
    from server.connection import Connection
    from server.state import ServerState

log = logging.getLogger("xo_migrate.users")


async def get_user(state: ServerState, user_id: str) -> User:
    user = await state.storage.user_by_id(user_id)
    if user is None:
        raise errors.no_such_object(user_id, "user")
    return user


async def _check_email_free(state: ServerState, email: str) -> None:
    existing = await state.storage.user_by_email(email)
    if existing is not None:
        raise errors.object_already_exists(existing.id, "user")


async def create_user(state: ServerState, email: str, password: str, permission: str) -> User:
    await _check_email_free(state, email)  # fail fast, before the costly hash
    pw_hash = await state.auth.hash_password(password)
    user = User(str(uuid.uuid4()), email, pw_hash, permission)
    try:  # the store checks again, atomically (another instance may have added it)
        await state.storage.add_user(user)
    except EmailTaken as exc:
        raise errors.object_already_exists(exc.args[0], "user") from None
    log.info("event=user_created user=%s email=%s permission=%s", user.id, email, permission)
    return user


async def update_user(
    state: ServerState,
    user_id: str,
    *,
    caller: Connection | None = None,
    email: str | None = None,
    password: str | None = None,
    permission: str | None = None,
    preferences: dict[str, Any] | None = None,
) -> User:
    user = await get_user(state, user_id)
    pw_hash = await state.auth.hash_password(password) if password else None
    user = await get_user(state, user_id)  # re-read after the await: it may have changed meanwhile
    if email and email != user.email:
        await _check_email_free(state, email)
        user.email = email
    if permission:
        user.permission = permission
    if pw_hash is not None:
        user.pw_hash = pw_hash
    if preferences is not None:
        # xo-server merges: a null value removes that preference.
        merged = dict(user.preferences)
        for key, value in preferences.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        # A quota on what a user stores (depth and string sizes are bounded by server/limits.py).
        quota = state.config.limits.max_preferences_size
        size = len(orjson.dumps(merged))
        if size > quota:
            raise invalid_value(
                "/preferences",
                "maxSize",
                quota,
                f"preferences would take {size} bytes, more than the {quota} allowed",
            )
        user.preferences = merged
    try:
        await state.storage.update_user(user)
    except EmailTaken as exc:
        raise errors.object_already_exists(exc.args[0], "user") from None
    refresh_user(state, user)
    if state.cluster is not None:
        await state.cluster.user_changed(user.id)
    log.info(
        "event=user_updated user=%s email=%s permission=%s password_changed=%s",
        user.id,
        user.email,
        user.permission,
        pw_hash is not None,
    )
    if pw_hash is not None:
        await _end_sessions(state, user.id, keep=caller)
    return user


def refresh_user(state: ServerState, user: User) -> None:
    """The user's connections hold its new record; a new permission moves them in the push
    hub (an admin sees everything, others what their ACLs let them view)."""
    for conn in state.connections:
        if conn.user is not None and conn.user.id == user.id:
            conn.user = user
            state.push.regroup(conn)


async def reload_users(state: ServerState, user_ids: Collection[str]) -> None:
    """Their groups changed: their connections hold their records as stored now."""
    for user_id in user_ids:
        user = await state.storage.user_by_id(user_id)
        if user is not None:
            refresh_user(state, user)


async def _end_sessions(state: ServerState, user_id: str, *, keep: Connection | None) -> None:
    """After a new password: the user's tokens go, and its connections but `keep` close."""
    doomed = await state.auth.revoke_tokens(tokens=None, pattern=None, user_id=user_id)
    if state.cluster is not None:
        await state.cluster.revoked(doomed, user_id=user_id)
    closed = await close_connections(
        state, lambda c: c.user is not None and c.user.id == user_id and c is not keep, caller=keep
    )
    log.info("event=sessions_ended user=%s connections_closed=%d", user_id, closed)


async def change_password(
    state: ServerState, caller: Connection, old_password: str, new_password: str
) -> None:
    user = caller.user
    if user is None:
        raise errors.unauthorized()
    # Through the sign-in throttle: a signed-in session must not guess passwords at speed.
    await state.auth.check_password(user.email, old_password, caller.remote)
    await update_user(state, user.id, caller=caller, password=new_password)


async def delete_user(state: ServerState, user_id: str, *, caller: Connection) -> None:
    await get_user(state, user_id)
    await state.storage.delete_user(user_id)  # its tokens, memberships and ACL entries too
    state.acl.forget_user(user_id)
    if state.cluster is not None:  # its connections elsewhere close, the others' ACLs reload
        await state.cluster.revoked(set(), user_id=user_id)
        state.acl.announce()
    closed = await close_connections(
        state, lambda c: c.user is not None and c.user.id == user_id, caller=caller
    )
    log.info("event=user_deleted user=%s connections_closed=%d", user_id, closed)


async def revoke_tokens(
    state: ServerState,
    *,
    tokens: list[str] | None,
    pattern: dict[str, Any] | None,
    user_id: str | None,
    caller: Connection,
) -> None:
    doomed: Collection[str] = await state.auth.revoke_tokens(
        tokens=tokens, pattern=pattern, user_id=user_id
    )
    if doomed and state.cluster is not None:  # and on the other instances
        await state.cluster.revoked(set(doomed))
    if doomed:
        closed = await close_connections(
            state, lambda c: c.token_hash is not None and c.token_hash in doomed, caller=caller
        )
        log.info("event=token_connections_closed count=%d", closed)


async def close_connections(
    state: ServerState, which: Callable[[Connection], bool], *, caller: Connection | None
) -> int:
    """Close the open connections `which` selects. The caller's own connection, if selected,
    still gets its reply and is closed on its next message."""
    doomed = [c for c in state.connections if which(c)]
    others = []
    for conn in doomed:
        if conn is caller:
            conn.end_after_reply()
        else:
            conn.sign_out()  # at once: no call of theirs runs as that user from now on
            others.append(conn)
    await asyncio.gather(*(c.disconnect() for c in others), return_exceptions=True)
    return len(doomed)
