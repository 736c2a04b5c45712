"""vif.*: virtual network interfaces (xo-server api/vif.mjs): the values of a VIF's locking
mode, for xo-web's VM network tab."""

from __future__ import annotations

from api.registry import Call, Method, XoParams

LOCKING_MODES = ["disabled", "locked", "network_default", "unlocked"]


def get_locking_mode_values(call: Call, params: XoParams) -> list[str]:
    return list(LOCKING_MODES)


METHODS = [Method("vif.getLockingModeValues", get_locking_mode_values)]
