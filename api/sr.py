"""sr.*: storage repositories (xo-server api/sr.mjs).

`sr.getAllUnhealthyVdiChainsLength` is the dashboard's "VDIs to coalesce" badge: for every
writable SR (not an ISO library, size > 0) of every connected pool,
`{vdisWithUnknownVhdParent, unhealthyVdis, nUnhealthyVdis}` computed from the VHD chains as
xo-server's getVdiChainsInfo does. A VHD that is the parent of exactly one other VHD is waiting
for coalesce (an unhealthy link); a managed, non-snapshot VDI's `unhealthyVdis` entry is the
number of such links in its chain up to the base, `nUnhealthyVdis` counts each link of the SR
once, and a VDI whose chain reaches a parent that no longer exists is listed in
`vdisWithUnknownVhdParent` (VDI uuid -> the missing parent's uuid). A VHD's parent is its
`parent` field (XAPI's `sm_config["vhd-parent"]`); an SR without chains gets zeros.
"""

from __future__ import annotations

from typing import Any

from api.registry import Call, Method, XoParams

XoObject = dict[str, Any]
_VDI_TYPES = ("VDI", "VDI-snapshot", "VDI-unmanaged")


def get_all_unhealthy_vdi_chains_length(call: Call, params: XoParams) -> dict[str, Any]:
    store = call.state.store
    vdis_by_sr: dict[str, list[XoObject]] = {}
    for vdi_type in _VDI_TYPES:
        for vdi in store.by_type(vdi_type):
            vdis_by_sr.setdefault(vdi.get("$SR") or "", []).append(vdi)
    out: dict[str, Any] = {}
    for sr in store.by_type("SR"):
        if sr.get("content_type") == "iso" or not (sr.get("size") or 0) > 0:
            continue
        out[sr.get("uuid") or sr["id"]] = vdi_chains_info(vdis_by_sr.get(sr["id"], []), store.get)
    return out


def _parent(vdi: XoObject) -> str | None:
    parent = vdi.get("parent")
    if parent is None:
        parent = (vdi.get("sm_config") or {}).get("vhd-parent")
    return parent if isinstance(parent, str) and parent else None


def vdi_chains_info(vdis: list[XoObject], lookup: Any) -> dict[str, Any]:
    """The chains of the VDIs of one SR; `lookup(uuid)` finds any object (a parent may be
    anywhere in the pool)."""
    children: dict[str, int] = {}
    for vdi in vdis:
        parent = _parent(vdi)
        if parent is not None:
            children[parent] = children.get(parent, 0) + 1
    # uuid -> (unhealthy links from it to the base, uuid of a missing ancestor or None)
    cache: dict[str, tuple[int, str | None]] = {}
    n_unhealthy = 0

    def chain(uuid: str) -> tuple[int, str | None]:
        nonlocal n_unhealthy
        path: list[str] = []  # walked up to a cached node, the base or a missing parent
        tail: tuple[int, str | None] = (0, None)
        current: str | None = uuid
        while current is not None and current not in path:
            if current in cache:
                tail = cache[current]
                break
            path.append(current)
            vdi = lookup(current)
            if vdi is None or vdi.get("type") not in _VDI_TYPES:
                tail = (0, current)
                current = None
            else:
                current = _parent(vdi)
        for node in reversed(path):
            link = 1 if children.get(node) == 1 else 0
            n_unhealthy += link
            tail = (tail[0] + link, tail[1])
            cache[node] = tail
        return cache[uuid]

    unhealthy: dict[str, int] = {}
    unknown_parent: dict[str, str] = {}
    for vdi in vdis:
        if vdi.get("type") != "VDI":  # managed and not a snapshot
            continue
        uuid = vdi.get("uuid") or vdi["id"]
        length, missing = chain(uuid)
        if length:
            unhealthy[uuid] = length
        if missing is not None:
            unknown_parent[uuid] = missing
    return {
        "vdisWithUnknownVhdParent": unknown_parent,
        "unhealthyVdis": unhealthy,
        "nUnhealthyVdis": n_unhealthy,
    }


METHODS = [
    Method(
        "sr.getAllUnhealthyVdiChainsLength",
        get_all_unhealthy_vdi_chains_length,
        permission="admin",
    ),
]
