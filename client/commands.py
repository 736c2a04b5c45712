"""login, ls, plan, cancel and history (migrate and watch: client/follow.py)."""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import getpass
import socket
import sys
from typing import Any

from client import registration, units
from client.board import LIVE, label
from client.connection import Connection
from client.errors import EXIT_FAILURE, EXIT_OK, CliError, RpcError, UsageError
from client.inventory import Inventory, XoObject, resolve_among
from client.output import Output
from client.plan_view import refused, show_plan
from client.session import open_session
from client.targets import TYPES, migrate_params, needs_devices

# -- login -------------------------------------------------------------------------------


def _ask(prompt: str, secret: bool = False) -> str:
    if not sys.stdin.isatty():
        what = "password: use --password-stdin" if secret else "email: use --email"
        raise UsageError(f"no terminal to ask the {what}")
    return getpass.getpass(prompt) if secret else input(prompt)


async def login(args: argparse.Namespace, out: Output) -> int:
    email = args.email or _ask("email: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = _ask("password: ", secret=True)
    previous = None
    with contextlib.suppress(CliError):
        previous = registration.load()
    conn = await Connection.open(args.url, allow_unauthorized=args.allow_unauthorized)
    try:
        try:
            await conn.call("session.signIn", {"email": email, "password": password})
        except RpcError as exc:
            if exc.code in (3, 8):
                raise CliError(
                    f"login refused: {exc.message}", hint="check the email and password"
                ) from None
            raise
        reg = registration.Registration(args.url, "", args.allow_unauthorized)
        if previous is not None:
            reg.clientId = previous.clientId
        params: dict[str, Any] = {
            "description": f"xo-migrate CLI on {socket.gethostname()}",
            "client": {"id": reg.clientId},
        }
        if args.expires_in:
            params["expiresIn"] = args.expires_in
        reg.token = await conn.call("token.create", params)
    finally:
        await conn.close()
    path = registration.save(reg)
    out.line(f"logged in to {args.url} as {email}; token stored in {path}", "ok")
    out.data({"server": args.url, "email": email, "config": str(path)})
    return EXIT_OK


# -- ls ----------------------------------------------------------------------------------

_LS_TYPES = {
    "vms": ("VM", "host", "pool"),
    "hosts": ("host", "pool"),
    "pools": ("pool", "host", "SR"),
    "srs": ("SR", "pool", "host"),
}
_LS_TYPE = {"vms": "VM", "hosts": "host", "pools": "pool", "srs": "SR"}


async def ls(args: argparse.Namespace, out: Output) -> int:
    async with open_session() as conn:
        inv = await Inventory.load(conn, _LS_TYPES[args.kind])
    objs = inv.of_type(_LS_TYPE[args.kind])
    if args.pool:
        pool = inv.resolve("pool", args.pool)
        objs = [o for o in objs if o.get("$pool") == pool["id"]]
    if args.host:
        host = inv.resolve("host", args.host)
        objs = [o for o in objs if o.get("$container") == host["id"] or o["id"] == host["id"]]
    if args.power_state:
        wanted = args.power_state.lower()
        objs = [o for o in objs if str(o.get("power_state", "")).lower() == wanted]
    if args.pattern:
        pattern = args.pattern.lower()
        objs = [o for o in objs if fnmatch.fnmatch(str(o.get("name_label", "")).lower(), pattern)]
    columns, row = _LS_ROWS[args.kind]
    out.table(columns, [row(inv, o) for o in objs])
    out.data(objs)
    return EXIT_OK


def _vm_row(inv: Inventory, vm: XoObject) -> list[str]:
    host = inv.host_of(vm)
    memory = (vm.get("memory") or {}).get("size")
    return [
        str(vm.get("name_label")),
        str(vm.get("power_state")),
        str(host.get("name_label")) if host else "-",
        inv.name(vm.get("$pool")),
        units.size(memory),
        vm["id"],
    ]


def _host_row(inv: Inventory, host: XoObject) -> list[str]:
    memory = host.get("memory") or {}
    size = int(memory.get("size") or 0)
    free = size - int(memory.get("usage") or 0)
    state = str(host.get("power_state"))
    if host.get("enabled") is False:
        state += " (disabled)"
    return [
        str(host.get("name_label")),
        str(host.get("address")),
        inv.name(host.get("$pool")),
        state,
        f"{units.size(free)} / {units.size(size)}",
        str(len(host.get("residentVms") or [])),
        host["id"],
    ]


def _pool_row(inv: Inventory, pool: XoObject) -> list[str]:
    hosts = [h for h in inv.of_type("host") if h.get("$pool") == pool["id"]]
    return [
        str(pool.get("name_label")),
        inv.name(pool.get("master")),
        str(len(hosts)),
        inv.name(pool.get("default_SR")),
        pool["id"],
    ]


def _sr_row(inv: Inventory, sr: XoObject) -> list[str]:
    size = int(sr.get("size") or 0)
    used = int(sr.get("physical_usage") or 0)
    container = inv.get(sr.get("$container"))
    where = "shared" if sr.get("shared") else inv.name(sr.get("$container"))
    if container is not None and container.get("type") == "pool":
        where = "shared" if sr.get("shared") else "-"
    return [
        str(sr.get("name_label")),
        str(sr.get("SR_type")),
        inv.name(sr.get("$pool")),
        where,
        units.size(size),
        units.size(size - used),
        sr["id"],
    ]


_LS_ROWS: dict[str, tuple[list[str], Any]] = {
    "vms": (["name", "power", "host", "pool", "memory", "uuid"], _vm_row),
    "hosts": (["name", "address", "pool", "power", "memory free", "VMs", "uuid"], _host_row),
    "pools": (["name", "master", "hosts", "default SR", "uuid"], _pool_row),
    "srs": (["name", "type", "pool", "host", "size", "free", "uuid"], _sr_row),
}


# -- plan --------------------------------------------------------------------------------


async def plan(args: argparse.Namespace, out: Output) -> int:
    async with open_session() as conn:
        inv = await Inventory.load(conn, TYPES + needs_devices(args))
        vm = inv.resolve("VM", args.vm)
        host = inv.resolve("host", args.host)
        answer = await conn.call("migration.plan", migrate_params(inv, args, vm, host))
    show_plan(out, inv, answer)
    out.data(answer)
    return EXIT_FAILURE if refused(answer) else EXIT_OK


# -- cancel ------------------------------------------------------------------------------


async def cancel(args: argparse.Namespace, out: Output) -> int:
    async with open_session() as conn:
        records = await conn.call("migration.getAll", {"limit": 1000}) or []
        # A live migration can also be named by its VM (its only live one).
        candidates = [
            {**m, "name_label": m.get("vmName") if m.get("status") in LIVE else None}
            for m in records
        ]
        target = resolve_among("migration", args.id, candidates)
        answer = await conn.call("migration.cancel", {"id": target["id"]})
    out.data({"id": target["id"], **answer})
    if answer.get("cancelled"):
        out.line(f"cancelled: {label(target)} ({target['id']})", "ok")
        return EXIT_OK
    raise CliError(
        f"not cancelled ({answer.get('outcome')}): {answer.get('reason')}; "
        f"the migration is {answer.get('status')}"
    )


# -- history -----------------------------------------------------------------------------


async def history(args: argparse.Namespace, out: Output) -> int:
    try:
        since = units.since(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    async with open_session() as conn:
        inv = await Inventory.load(conn, ("VM", "host", "pool"))
        records = await conn.call("migration.getAll", {"limit": 1000 if args.vm else args.limit})
    if args.vm:
        known = [
            v for v in inv.of_type("VM") if v.get("name_label") == args.vm or v["id"] == args.vm
        ]
        vm_id = known[0]["id"] if len(known) == 1 else None
        if vm_id is None and not any(r.get("vmName") == args.vm for r in records):
            vm_id = inv.resolve("VM", args.vm)["id"]  # a prefix, or a clear error
        records = [r for r in records if r.get("vm") == vm_id or r.get("vmName") == args.vm]
    if since is not None:
        records = [r for r in records if (r.get("created") or 0) >= since]
    records = records[: args.limit]
    out.table(
        ["started", "VM", "from", "to", "mode", "status", "duration", "bytes", "error", "id"],
        [_history_row(inv, r) for r in records],
    )
    if not records:
        out.line("no migration")
    out.data(records)
    return EXIT_OK


def _history_row(inv: Inventory, r: dict[str, Any]) -> list[str]:
    error = (r.get("error") or {}).get("code") or ""
    mode = "xenmotion" if r.get("mode") == "pool_migrate" else "storage motion"
    if r.get("crossPool"):
        mode += ", cross-pool"
    return [
        units.timestamp(r.get("started") or r.get("created")),
        str(r.get("vmName") or r.get("vm")),
        inv.name(r.get("sourceHost"), inv.name(r.get("sourcePool"))),
        str(r.get("targetHostName") or inv.name(r.get("targetHost"))),
        mode,
        str(r.get("status")),
        units.duration(r.get("duration")),
        units.size(r.get("bytesTotal")),
        str(error),
        str(r["id"])[:8],
    ]
