"""The migration messages on the wire: the order in which each call checks, reserves and runs
its phases (xapi.md 3.1-3.5). The work itself is in `checks` and `run`."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from xen.sim.migration.checks import (
    MIGRATE_SEND_STATES,
    POOL_MIGRATE_STATES,
    Target,
    check_cpu,
    check_host_usable,
    check_memory,
    check_networks,
    check_operation,
    check_srs_visible,
    check_versions_not_decreasing,
    flag,
    validate,
    vif_networks,
)
from xen.sim.migration.run import Migration
from xen.sim.registry import CallContext, PoolLike, XapiFailure, message

log = logging.getLogger(__name__)

# A VM held by another operation is waited for, not refused: xapi retries for up to 2 h
# (helpers.ml, 1-20 s backoff); the waiting call stays cancellable.
LOCK_WAIT_S = 7200.0
LOCK_RETRY_S = 1.0

# -- host.migrate_receive ----------------------------------------------------------------------


@message("host.migrate_receive")
def migrate_receive(
    ctx: CallContext, host: str, network: str, options: dict[str, str]
) -> dict[str, str]:
    db = ctx.db
    host_rec = db.get("host", host)
    db.get("network", network)
    pif = next((p for p in host_rec["PIFs"] if db.get("PIF", p)["network"] == network), None)
    if pif is None:
        raise XapiFailure("HOST_CANNOT_ATTACH_NETWORK", host, network)
    address = _pif_address(db.get("PIF", pif))
    if not address:
        if db.get("PIF", pif)["ip_configuration_mode"] == "None":
            raise XapiFailure("PIF_HAS_NO_NETWORK_CONFIGURATION", pif)
        raise XapiFailure("INTERFACE_HAS_NO_IP", pif)
    session = ctx.pool.create_session(_session_user(ctx))
    base = ctx.pool.base_url(address)
    master = ctx.pool.base_url(ctx.pool.host_address(ctx.pool.master_ref))
    log.info("event=migrate_receive pool=%s host=%s address=%s", ctx.pool.name, host, address)
    return {
        "SM": f"{base}/services/SM?session_id={session}",
        "host": host,
        "xenops": f"{base}/services/xenops?session_id={session}",
        "session_id": session,
        "master": master,
    }


def _pif_address(pif: dict[str, Any]) -> str:
    if pif.get("primary_address_type") == "IPv6":
        for addr in pif.get("IPv6", []):
            if addr:
                return str(addr).split("/")[0]
        return ""
    return str(pif.get("IP", ""))


def _session_user(ctx: CallContext) -> str:
    """The caller's user name: the new session copies the caller's identity."""
    sessions = getattr(ctx.pool, "sessions", None)
    name = sessions.username(ctx.session) if sessions is not None else ""
    return str(name or "root")


# -- the three VM calls ------------------------------------------------------------------------


@message("VM.assert_can_migrate", min_args=6, max_args=7)
async def assert_can_migrate(
    ctx: CallContext,
    vm: str,
    dest: dict[str, str],
    live: bool,
    vdi_map: dict[str, str],
    vif_map: dict[str, str],
    options: dict[str, str],
    vgpu_map: dict[str, str] | None = None,
) -> None:
    # The checks take time on a real pool (a cross-pool dry-run import): [timing] assert_s.
    ctx.set_cancellable(True)
    await ctx.sleep(ctx.pool.timing.assert_s)
    rec = ctx.db.get("VM", vm)
    strict = not flag(options, "force")
    check_operation(
        ctx.db, vm, rec, "migrate_send", MIGRATE_SEND_STATES, in_progress=False, strict=strict
    )
    target = resolve_target(ctx, dest)
    validate(ctx.db, vm, rec, target, vdi_map, vif_map, options)


@message("VM.pool_migrate")
async def pool_migrate(ctx: CallContext, vm: str, host: str, options: dict[str, str]) -> None:
    db = ctx.db
    rec = db.get("VM", vm)
    db.get("host", host)
    force = flag(options, "force")
    if not force:
        check_cpu(db, vm, rec, host)
    rec = await _lock_vm(ctx, vm, "pool_migrate", POOL_MIGRATE_STATES, strict=not force)
    run = Migration.begin(ctx, vm, "pool_migrate")
    try:
        check_versions_not_decreasing(db, rec, host)
        # assert_can_boot_here, then the forward to the host the VM runs on.
        check_host_usable(db, host, localhost=host == rec["resident_on"])
        check_srs_visible(db, vm, rec, host)
        check_networks(db, vm, vif_networks(db, rec), host)
        check_memory(db, rec, host)
        run.target(Target(ctx.pool, host, cross=False))
        run.reserve()
        run.check_source_live()
        await run.dispatch_phase()
        await run.memory_phase()
        await run.switch_phase()
        await run.finalise()
    except BaseException as exc:
        run.rollback(exc)
        raise


@message("VM.migrate_send", min_args=6, max_args=8)
async def migrate_send(
    ctx: CallContext,
    vm: str,
    dest: dict[str, str],
    live: bool,
    vdi_map: dict[str, str],
    vif_map: dict[str, str],
    options: dict[str, str],
    vgpu_map: dict[str, str] | None = None,
    vdi_format_map: dict[str, str] | None = None,
) -> str:
    db = ctx.db
    strict = not flag(options, "force")
    rec = await _lock_vm(ctx, vm, "migrate_send", MIGRATE_SEND_STATES, strict=strict)
    run = Migration.begin(ctx, vm, "migrate_send")
    try:
        checking = ctx.pool.timing.assert_s
        async with _Subtask(ctx, "VM.assert_can_migrate", checking):
            target = resolve_target(ctx, dest)
            run.disks, run.networks = validate(db, vm, rec, target, vdi_map, vif_map, options)
        run.target(target)
        run.copy = flag(options, "copy")
        run.reserve()
        run.check_source_live()
        run.enter_storage_gate()
        await run.dispatch_phase(spent=checking)
        await run.disk_phase()
        if target.cross:
            await run.metadata_phase()
        if run.running:
            await run.memory_phase()
            await run.switch_phase()
        return await run.finalise()
    except BaseException as exc:
        run.rollback(exc)
        raise
    finally:
        run.leave_storage_gate()


async def _lock_vm(
    ctx: CallContext, vm: str, op: str, states: tuple[str, ...], *, strict: bool
) -> dict[str, Any]:
    """`with_vm_operation`'s checks; while another operation holds the VM, wait and retry."""
    waited = 0.0
    while True:
        rec = ctx.db.get("VM", vm)
        try:
            check_operation(ctx.db, vm, rec, op, states, strict=strict)
            return rec
        except XapiFailure as exc:
            if exc.code != "OTHER_OPERATION_IN_PROGRESS" or waited >= LOCK_WAIT_S:
                raise
        ctx.set_cancellable(True)
        await ctx.sleep(LOCK_RETRY_S)
        waited += LOCK_RETRY_S


def resolve_target(ctx: CallContext, dest: dict[str, str]) -> Target:
    """Intra-pool iff dest["host"] is a host of the source pool; else reach the destination
    through the address its migrate_receive put in the map, and check its session there."""
    host = str(dest.get("host", ""))
    address = ""
    for key in ("xenops", "master", "SM"):
        address = urlsplit(str(dest.get(key, ""))).hostname or ""
        if address:
            break
    if ctx.db.exists("host", host):
        return Target(ctx.pool, host, cross=False, address=address)
    if not address or "session_id" not in dest or not host:
        raise XapiFailure("INTERNAL_ERROR", "Not_found")
    remote = ctx.pool.sim.pool_by_address(address)
    if remote is None or not _reachable(remote):
        raise XapiFailure("CANNOT_CONTACT_HOST", address)
    session = str(dest["session_id"])
    if not remote.session_valid(session):
        raise XapiFailure("SESSION_INVALID", session)
    remote.db.get("host", host)
    return Target(remote, host, cross=remote is not ctx.pool, address=address)


def _reachable(pool: PoolLike) -> bool:
    return bool(getattr(pool, "reachable", True))


class _Subtask:
    """The `VM.assert_can_migrate` subtask XAPI shows while migrate_send checks: it lives
    `seconds` of simulated time (the checks' share of the dispatch phase), so event.from
    watchers see it added, then deleted."""

    def __init__(self, ctx: CallContext, label: str, seconds: float) -> None:
        self.ctx, self.label, self.seconds, self.ref = ctx, label, seconds, ""

    async def __aenter__(self) -> None:
        ctx = self.ctx
        runner = getattr(ctx.pool, "tasks", None)
        if ctx.task is not None and runner is not None and ctx.db.exists("task", ctx.task):
            self.ref = runner.create_record(self.label, subtask_of=ctx.task)
        await ctx.sleep(self.seconds)

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        runner = getattr(self.ctx.pool, "tasks", None)
        if not self.ref or runner is None or not self.ctx.db.exists("task", self.ref):
            return
        if exc is None:
            runner.complete(self.ref, None)
        elif isinstance(exc, XapiFailure):
            runner.fail(self.ref, [exc.code, *exc.params])
        runner.destroy(self.ref)


# Changed block tracking: xo-server disables it on the disks it moves when migrate_send answers
# VDI_CBT_ENABLED (xapi.md 3.6), so these two belong with the migration messages.
@message("VDI.enable_cbt")
def vdi_enable_cbt(ctx: CallContext, vdi: str) -> None:
    ctx.db.get("VDI", vdi)  # HANDLE_INVALID for an unknown ref
    ctx.db.update("VDI", vdi, cbt_enabled=True)


@message("VDI.disable_cbt")
def vdi_disable_cbt(ctx: CallContext, vdi: str) -> None:
    ctx.db.get("VDI", vdi)
    ctx.db.update("VDI", vdi, cbt_enabled=False)
