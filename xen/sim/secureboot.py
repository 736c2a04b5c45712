"""`VM.get_secureboot_readiness` (XAPI 24.x, XCP-ng 8.3) and the NVRAM the lab gives VMs.

The answer follows the datamodel's `vm_secureboot_readiness` enum, checked in this order:
not_supported (firmware is not UEFI), disabled (platform secureboot is not "true"),
first_boot (NVRAM holds no EFI variables yet), setup_mode (no PK), certs_incomplete (no KEK
or db), ready_no_dbx (no dbx), ready (PK, KEK, db and dbx all set).

A real `NVRAM["EFI-variables"]` is varstored's base64 blob, in which every variable name is
stored in UTF-16LE. The simulator writes a small blob of that kind for the lab's `efi_vars`
and looks variables up by their UTF-16LE, NUL-terminated name, so an NVRAM set through
`VM.set_NVRAM` is judged the same way.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from xen.sim.registry import CallContext, message

NVRAM_KEY = "EFI-variables"
SECURE_BOOT_VARS = ("PK", "KEK", "db", "dbx")


def _encoded(name: str) -> bytes:
    return name.encode("utf-16-le") + b"\x00\x00"


def efi_variables_blob(names: Iterable[str]) -> str:
    """An `EFI-variables` NVRAM value holding the named variables (empty: none)."""
    names = list(names)
    if not names:
        return ""
    raw = b"".join(len(_encoded(n)).to_bytes(8, "little") + _encoded(n) for n in names)
    return base64.b64encode(raw).decode()


def variables_present(blob: str) -> set[str]:
    """Which of the secure boot variables an `EFI-variables` value holds."""
    try:
        raw = base64.b64decode(blob, validate=False)
    except (binascii.Error, ValueError):
        return set()
    return {name for name in SECURE_BOOT_VARS if _encoded(name) in raw}


def readiness(rec: dict[str, object]) -> str:
    boot_params = rec.get("HVM_boot_params") or {}
    platform = rec.get("platform") or {}
    nvram = rec.get("NVRAM") or {}
    assert isinstance(boot_params, dict) and isinstance(platform, dict)
    assert isinstance(nvram, dict)
    if boot_params.get("firmware") != "uefi":
        return "not_supported"
    if str(platform.get("secureboot", "")).lower() != "true":
        return "disabled"
    blob = str(nvram.get(NVRAM_KEY, ""))
    if not blob:
        return "first_boot"
    present = variables_present(blob)
    if "PK" not in present:
        return "setup_mode"
    if not {"KEK", "db"} <= present:
        return "certs_incomplete"
    if "dbx" not in present:
        return "ready_no_dbx"
    return "ready"


# Not in the datamodel snapshot the schema is generated from (it predates the call), hence
# the explicit arity; the VM ref arrives unconverted.
@message("VM.get_secureboot_readiness", min_args=1, max_args=1)
def get_secureboot_readiness(ctx: CallContext, vm: object) -> str:
    return readiness(ctx.db.get("VM", str(vm)))
