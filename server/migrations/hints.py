"""One-line hints a person can act on, per XAPI error code (shown with migration errors)."""

from __future__ import annotations

HINTS: dict[str, str] = {
    "VM_BAD_POWER_STATE": "XenMotion moves only running VMs: start it, or move it halted with storage motion (give sr, or use vm.migrate_pool).",
    "VM_IS_TEMPLATE": "Templates cannot be migrated; copy the template instead.",
    "VM_IS_SNAPSHOT": "Snapshots move with their VM; migrate the VM itself.",
    "OPERATION_BLOCKED": "Migration is blocked on this VM (blocked_operations); remove the block to proceed.",
    "HOST_NOT_ENOUGH_FREE_MEMORY": "The target host lacks free memory: pick another host or free memory there.",
    "VM_INCOMPATIBLE_WITH_THIS_HOST": "The target CPU lacks features the VM booted with; retry with force=true or pick a compatible host.",
    "VM_REQUIRES_SR": "The target host cannot see the VM's storage: use storage motion (give sr or mapVdisSrs).",
    "VM_REQUIRES_NETWORK": "The target host has no PIF on the VM's network: map its VIFs or pick another host.",
    "HOST_OFFLINE": "The host is offline; bring it back or pick another host.",
    "HOST_NOT_LIVE": "The target host is not live; check its health.",
    "HOST_DISABLED": "The target host is disabled (maintenance mode); enable it or pick another host.",
    "TOO_MANY_STORAGE_MIGRATES": "The source host already runs 3 storage migrations; this one waits and retries.",
    "VDI_NOT_IN_MAP": "A disk has no target SR: give sr or a mapVdisSrs entry for it.",
    "VIF_NOT_IN_MAP": "A network card has no target network: give a mapVifsNetworks entry for it.",
    "VDI_CBT_ENABLED": "Changed block tracking is enabled on a disk; disable CBT on it and retry.",
    "VDI_IS_ENCRYPTED": "Encrypted disks cannot be storage-migrated.",
    "SR_DOES_NOT_SUPPORT_MIGRATION": "The SR does not support storage migration; choose another target SR.",
    "HOST_CANNOT_ATTACH_NETWORK": "The target host has no PIF on the migration network; choose another migration network.",
    "INTERFACE_HAS_NO_IP": "The target host's PIF on the migration network has no IP; configure it or pick another network.",
    "PIF_HAS_NO_NETWORK_CONFIGURATION": "The target host's PIF on the migration network is unconfigured; configure an IP.",
    "TASK_CANCELLED": "The migration was cancelled; the VM stays where it was.",
    "MIRROR_FAILED": "Mirroring a disk failed; check the storage on both sides and retry.",
    "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED": "The source host could not reach the target; check the migration network.",
    "CANNOT_CONTACT_HOST": "A host could not be contacted; check the network between the pools.",
    "SESSION_AUTHENTICATION_FAILED": "The pool rejected our credentials; fix them in the server settings.",
    "NO_DEFAULT_SR": "The target pool has no default SR: set one, or give sr / mapVdisSrs.",
    "MIGRATION_IN_PROGRESS": "This VM is already being migrated; wait for that migration or cancel it.",
    "POOL_UNAVAILABLE": "xo-migrate is not connected to that pool right now; check server.getAll.",
    "CONNECTION_LOST": "The pool stayed unreachable while XAPI was migrating: check where the VM is, and migrate it again if needed.",
    "SERVER_RESTARTED": "Check where the VM is now; start the migration again if needed.",
    "TASK_DESTROYED": "XAPI lost the migration's task (e.g. a toolstack restart): the message says where the VM is; migrate it again if needed.",
    "VM_HAS_PCI_ATTACHED": "Detach the passthrough PCI device before migrating.",
    "VM_HAS_VGPU": "Detach the vGPU (or use a migratable vGPU type) before migrating.",
    "VM_LACKS_FEATURE": "The VM needs PV drivers / feature-suspend to be live-migrated.",
    "VM_IS_IMMOBILE": "The VM is marked non-migratable (platform:nomigrate or nested-virt).",
    "NOT_SUPPORTED_DURING_UPGRADE": "The pool is in a rolling upgrade; finish it first.",
}


def hint_for(code: str) -> str:
    return HINTS.get(code, "See the XAPI error code and params for details.")
