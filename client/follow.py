"""`migrate` and `watch`: start migrations, then follow them live from their pushed objects
until they end, Ctrl-C or a lost connection."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from client import interrupt, units
from client.board import LIVE, TERMINAL, Board, error_text, label, state_text, view_for
from client.connection import Connection
from client.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CliError, RpcError, UsageError
from client.inventory import Inventory
from client.output import Output
from client.session import open_session
from client.targets import TYPES, migrate_params, needs_devices


async def migrate(args: argparse.Namespace, out: Output) -> int:
    if len(args.vms) > 1 and (args.map_disk or args.map_vif):
        raise UsageError("--map-disk and --map-vif name one VM's devices: migrate one VM")
    async with open_session() as conn:
        inv = await Inventory.load(conn, TYPES + needs_devices(args))
        host = inv.resolve("host", args.host)
        vms = list({vm["id"]: vm for vm in (inv.resolve("VM", v) for v in args.vms)}.values())
        all_params = [migrate_params(inv, args, vm, host) for vm in vms]
        board = Board(ids=[])
        conn.listen(board.on_push)  # before starting: no pushed change is missed
        started: list[tuple[str, dict[str, Any]]] = []
        failed_to_start = 0
        for vm, params in zip(vms, all_params, strict=True):
            try:
                migration_id = await conn.call("migration.start", params)
            except RpcError as exc:
                failed_to_start += 1
                out.error(
                    CliError(f"{vm.get('name_label')}: not started: {exc.message}", 1, exc.hint)
                )
                continue
            started.append((migration_id, vm))
        if args.no_wait or not started:
            for migration_id, vm in started:
                out.line(f"{migration_id}  {vm.get('name_label')} → {host.get('name_label')}")
            out.data(
                [{"id": mid, "vm": vm["id"], "vmName": vm.get("name_label")} for mid, vm in started]
            )
            return EXIT_FAILURE if failed_to_start else EXIT_OK
        for migration_id, _vm in started:
            board.want(migration_id)
        code = await follow(conn, board, out, cancellable=True)
        if code != EXIT_OK:
            return code
        return EXIT_FAILURE if failed_to_start or not _all_succeeded(board) else EXIT_OK


async def watch(args: argparse.Namespace, out: Output) -> int:
    async with open_session() as conn:
        board = Board(ids=None)
        conn.listen(board.on_push)
        for m in await conn.call("migration.getAll", {"limit": 500}) or []:
            if m.get("status") in LIVE:
                board.offer(m)
        if args.once:
            return _show_once(out, board)
        return await follow(conn, board, out, cancellable=False)


def _show_once(out: Output, board: Board) -> int:
    live = sorted(board.followed(), key=lambda m: m.get("created") or 0)
    if not live:
        out.line("no live migration")
        out.data(live)
        return EXIT_OK
    out.table(
        ["id", "migration", "state", "progress", "bytes", "ETA"],
        [
            [
                m["id"][:8],
                label(m),
                state_text(m),
                f"{float(m.get('progress') or 0) * 100:.0f}%",
                f"{units.size(m.get('bytesDone'))}/{units.size(m.get('bytesTotal'))}",
                units.duration(m.get("eta")),
            ]
            for m in live
        ],
    )
    out.data(live)
    return EXIT_OK


def _all_succeeded(board: Board) -> bool:
    return all(m.get("status") == "success" for m in board.followed())


async def follow(conn: Connection, board: Board, out: Output, *, cancellable: bool) -> int:
    """Show the board live until every wanted migration ends (`migrate`), or until Ctrl-C
    (`watch`, or `migrate` when the person chooses to stop watching or cancel)."""
    view = view_for(out)
    with interrupt.interrupts() as interrupted:
        for mid in list(board.wanted):  # seed: the state as of now, in case nothing changes
            board.offer(await conn.call("migration.get", {"id": mid}))
        view.start()
        board.show(view)  # only now: a Ctrl-C from here on is ours to handle
        if board.follow_all and not board.migrations:
            view.message("no live migration; waiting for new ones (Ctrl-C to stop)")
        try:
            while not (board.wanted and board.all_done()):
                ended = await _first(interrupted, board.settled, conn.lost)
                if ended is conn.lost:
                    raise CliError(
                        "the connection to the server was lost; migrations go on in the server",
                        hint="xo-migrate watch follows them again",
                    )
                if ended is board.settled:
                    break
                # Ctrl-C
                if not cancellable or not interrupt.can_ask():
                    return _stopped(out, board, cancellable)
                view.stop()
                answer = await interrupt.ask(interrupted, board.settled)
                if answer == "settled":
                    break
                if answer == "stop":
                    return _stopped(out, board, cancellable)
                if answer == "cancel" and await _cancel_all(conn, board, out):
                    return EXIT_INTERRUPTED
                view.start()  # resumed, or not cancelled (too late): follow it to its end
        finally:
            view.stop()
    _report_failures(out, board)
    return EXIT_OK


async def _first(*events: asyncio.Event) -> asyncio.Event:
    waiters = {asyncio.ensure_future(e.wait()): e for e in events}
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return waiters[next(iter(done))]


def _stopped(out: Output, board: Board, cancellable: bool) -> int:
    if cancellable:
        live = [m for m in board.followed() if m.get("status") not in TERMINAL]
        for m in live:
            out.error(
                CliError(
                    f"stopped watching; {label(m)} goes on: migration {m['id']}",
                    hint=f"xo-migrate watch, or xo-migrate cancel {m['id'][:8]}",
                )
            )
    return EXIT_INTERRUPTED


async def _cancel_all(conn: Connection, board: Board, out: Output) -> bool:
    """Cancel every followed live migration; True if all were."""
    everything = True
    for m in board.followed():
        if m.get("status") in TERMINAL:
            continue
        try:
            answer = await conn.call("migration.cancel", {"id": m["id"]})
        except RpcError as exc:
            out.error(CliError(f"{label(m)}: cannot cancel: {exc.message}", 1, exc.hint))
            everything = False
            continue
        if answer.get("cancelled"):
            out.error(CliError(f"{label(m)}: cancelled"))
        else:
            everything = False
            reason = f"{answer.get('outcome')}: {answer.get('reason')}"
            out.error(CliError(f"{label(m)}: not cancelled ({reason}); still following it"))
    return everything


def _report_failures(out: Output, board: Board) -> None:
    """On stderr, whatever the output: each failed migration's XAPI code, message and hint."""
    for m in board.followed():
        if m.get("status") == "failure":
            message, hint = error_text(m)
            out.error(CliError(f"{label(m)}: failed: {message}", EXIT_FAILURE, hint))
        elif m.get("status") in ("cancelled", "interrupted"):
            out.error(CliError(f"{label(m)}: {m.get('status')}"))
