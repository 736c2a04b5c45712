"""Phase durations of a simulated migration (xapi.md 6.3), in simulated seconds.

Pure arithmetic over `Timing`, shared by the migration handlers (which sleep these durations
through the call context) and by anything that wants to predict how long a migration takes
(tests, the demo) without running it. Real seconds = simulated seconds x `time_scale`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xen.sim.registry import Timing

# xenopsd runs [VM_save (weight 10); VM_rename (weight 1)]: the memory copy ends at 10/11.
MEMORY_PHASE_END = 10 / 11


def copy_rate(timing: Timing) -> float:
    """Bytes/s a disk copy achieves: bounded by both the link and the storage."""
    return max(1.0, min(timing.link_rate, timing.disk_rate))


def vdi_copy_seconds(timing: Timing, allocated_bytes: int) -> float:
    """Copy time of one VDI: its allocated (not virtual) bytes cross the link."""
    return max(0, allocated_bytes) / copy_rate(timing)


def memory_copy_seconds(timing: Timing, memory_bytes: int) -> float:
    """Pre-copy time of a VM's memory (ballooned to dynamic_min), dirtied pages re-sent."""
    return max(0, memory_bytes) * max(timing.dirty_factor, 0.0) / max(1.0, timing.mem_rate)


@dataclass(frozen=True, slots=True)
class MigrationEstimate:
    dispatch: float
    disks: float
    metadata: float
    memory: float
    switch: float
    finalise: float

    @property
    def total(self) -> float:
        return (
            self.dispatch + self.disks + self.metadata + self.memory + self.switch + self.finalise
        )

    def real_seconds(self, timing: Timing) -> float:
        return self.total * timing.time_scale


def estimate(
    timing: Timing,
    *,
    allocated_disks: Iterable[int] = (),
    memory_bytes: int | None = None,
    cross_pool: bool = False,
) -> MigrationEstimate:
    """Simulated duration of each phase.

    `allocated_disks`: allocated bytes of every VDI that moves (empty for pool_migrate);
    `memory_bytes`: memory_dynamic_min of a running VM (None when it is not running).
    """
    disks = [timing.vdi_setup_s + vdi_copy_seconds(timing, a) for a in allocated_disks]
    running = memory_bytes is not None
    return MigrationEstimate(
        dispatch=timing.dispatch_s,
        disks=sum(disks),
        metadata=timing.metadata_import_s if cross_pool else 0.0,
        memory=(timing.memory_setup_s + memory_copy_seconds(timing, memory_bytes or 0))
        if running
        else 0.0,
        switch=timing.switch_s if running else 0.0,
        finalise=timing.finalise_s,
    )
