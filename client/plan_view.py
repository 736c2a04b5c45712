"""`migration.plan`'s answer as a readable explanation: the mode and why, each disk and
network card with where it goes and why, bytes to move, free space, memory, the refusals
predicted from the cache and XAPI's own verdict."""

from __future__ import annotations

from typing import Any

from client import units
from client.inventory import Inventory
from client.output import Output

MODES = {
    "pool_migrate": "XenMotion (pool_migrate): only the memory moves",
    "migrate_send": "storage motion (migrate_send): the disks, then the memory",
}


def refused(plan: dict[str, Any]) -> bool:
    """XAPI would refuse it: a predicted blocker, or its dry run said no."""
    verdict = plan.get("assertCanMigrate") or {}
    return bool(plan.get("blockers")) or verdict.get("ok") is False


def show_plan(out: Output, inv: Inventory, plan: dict[str, Any]) -> None:
    name = inv.name
    source_host = name(plan.get("sourceHost"), "no host (halted)")
    out.heading(
        f"Plan: {plan.get('vmName')} from {source_host} ({name(plan.get('sourcePool'))}) "
        f"to {name(plan.get('targetHost'))} ({name(plan.get('targetPool'))})"
    )
    memory = plan.get("memory") or {}
    facts = [
        ("mode", MODES.get(plan.get("mode", ""), str(plan.get("mode")))),
        ("why", str(plan.get("modeReason") or "-")),
        ("cross-pool", "yes" if plan.get("crossPool") else "no"),
    ]
    if plan.get("migrationNetwork"):
        facts.append(
            (
                "migration network",
                f"{name(plan['migrationNetwork'])} ({plan.get('migrationNetworkReason') or '-'})",
            )
        )
    facts.append(
        (
            "to move",
            f"{units.size(plan.get('bytesToMove'))} (disks "
            f"{units.size(plan.get('diskBytesToMove'))}, memory "
            f"{units.size(plan.get('memoryBytesToMove'))})",
        )
    )
    facts.append(
        (
            "memory",
            f"needs {units.size(memory.get('needed'))}, the target host has "
            f"{units.size(memory.get('free'))} free: "
            + ("enough" if memory.get("ok", True) else "NOT ENOUGH"),
        )
    )
    if plan.get("fallback"):
        facts.append(("fallback", str(plan["fallback"])))
    out.facts(facts)
    disks = plan.get("disks") or []
    if disks:
        out.table(
            ["device", "disk", "size", "from SR", "to SR", "why"],
            [
                [
                    str(d.get("device") or "-") + (" (snapshot)" if d.get("snapshot") else ""),
                    str(d.get("name") or d.get("vdi")),
                    units.size(d.get("allocated")),
                    name(d.get("srFrom")),
                    name(d.get("srTo")) + ("" if d.get("moves", True) else " (stays)"),
                    str(d.get("reason") or "-"),
                ]
                for d in disks
            ],
            title="Disks",
        )
    vifs = plan.get("vifs") or []
    if vifs:
        out.table(
            ["device", "MAC", "from network", "to network", "why"],
            [
                [
                    str(v.get("device")),
                    str(v.get("mac") or "-"),
                    name(v.get("networkFrom")),
                    name(v.get("networkTo")),
                    str(v.get("reason") or "-"),
                ]
                for v in vifs
            ],
            title="Network cards",
        )
    space = plan.get("srSpace") or {}
    if space:
        out.table(
            ["target SR", "needed", "free", "enough"],
            [
                [
                    str(s.get("name") or sr_id),
                    units.size(s.get("needed")),
                    units.size(s.get("free")),
                    "yes" if s.get("ok") else "NO",
                ]
                for sr_id, s in space.items()
            ],
            title="Free space",
        )
    blockers = plan.get("blockers") or []
    for warning in plan.get("warnings") or []:
        if not any(str(b.get("message")) in warning for b in blockers):  # said below
            out.line(f"warning: {warning}", "warn")
    for blocker in blockers:
        out.line(f"refused: {blocker.get('code')}: {blocker.get('message')}", "bad")
    _show_verdict(out, plan.get("assertCanMigrate") or {})
    if refused(plan):
        out.line("=> XAPI will refuse this migration", "bad")
    else:
        out.line("=> ready: xo-migrate migrate with the same arguments starts it", "ok")


def _show_verdict(out: Output, verdict: dict[str, Any]) -> None:
    prefix = "XAPI's verdict (VM.assert_can_migrate)"
    if not verdict.get("ran"):
        out.line(f"{prefix}: not run: {verdict.get('reason') or '-'}", "dim")
    elif verdict.get("ok"):
        out.line(f"{prefix}: ok", "ok")
    else:
        error = verdict.get("error") or {}
        out.line(f"{prefix}: refused: {error.get('code')}: {error.get('message')}", "bad")
        if error.get("hint"):
            out.line(f"hint: {error['hint']}", "warn")
