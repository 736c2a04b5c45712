"""`plan` and `migrate`'s target options (--sr, --map-disk, --map-vif, --network, --force)
turned into `vm.migrate` params, every name resolved against the inventory: SRs and networks
among the target pool's, disks and network cards among the VM's own."""

from __future__ import annotations

import argparse
from typing import Any

from client.errors import UsageError
from client.inventory import Inventory, XoObject, resolve_among

TYPES = ("VM", "host", "pool", "SR", "network")


def _pair(option: str, value: str) -> tuple[str, str]:
    left, sep, right = value.partition("=")
    if not sep or not left or not right:
        raise UsageError(f"{option} {value!r}: expected LEFT=RIGHT, e.g. xvda=shared-sr")
    return left, right


def vm_disks(inv: Inventory, vm: XoObject) -> list[XoObject]:
    """The VM's disks (no CD drives), each VDI with its VBD's device (xvda...)."""
    disks = []
    for vbd_id in vm.get("$VBDs") or []:
        vbd = inv.get(vbd_id)
        if vbd is None or vbd.get("is_cd_drive"):
            continue
        vdi = inv.get(vbd.get("VDI"))
        if vdi is not None:
            disks.append({**vdi, "device": vbd.get("device")})
    return disks


def migrate_params(
    inv: Inventory, args: argparse.Namespace, vm: XoObject, host: XoObject
) -> dict[str, Any]:
    pool = host.get("$pool")
    srs = [o for o in inv.of_type("SR") if o.get("$pool") == pool]
    networks = [o for o in inv.of_type("network") if o.get("$pool") == pool]
    params: dict[str, Any] = {"vm": vm["id"], "targetHost": host["id"]}
    if args.sr:
        params["sr"] = inv.resolve("SR", args.sr, srs)["id"]
    if args.map_disk:
        disks = vm_disks(inv, vm)
        mapping = {}
        for value in args.map_disk:
            disk, sr = _pair("--map-disk", value)
            mapping[resolve_among("disk", disk, disks)["id"]] = inv.resolve("SR", sr, srs)["id"]
        params["mapVdisSrs"] = mapping
    if args.map_vif:
        vifs = [v for v in (inv.get(i) for i in vm.get("VIFs") or []) if v is not None]
        mapping = {}
        for value in args.map_vif:
            vif, net = _pair("--map-vif", value)
            found = resolve_among("network card", vif, vifs)
            mapping[found["id"]] = inv.resolve("network", net, networks)["id"]
        params["mapVifsNetworks"] = mapping
    if args.network:
        params["migrationNetwork"] = inv.resolve("network", args.network, networks)["id"]
    if args.force:
        params["force"] = True
    return params


def needs_devices(args: argparse.Namespace) -> tuple[str, ...]:
    """The extra object types the options need (a VM's disks and network cards)."""
    extra: tuple[str, ...] = ()
    if args.map_disk:
        extra += ("VBD", "VDI")
    if args.map_vif:
        extra += ("VIF",)
    return extra
