"""Monotonic migration progress with a byte count, a rate and an ETA, from XAPI's progress.

XAPI's task progress is advisory and goes backwards: `VM.migrate_send` climbs to ~1.0 over the
disk phase, then restarts near 0 for the memory phase (xapi.md 6.1). We translate it into
bytes: disks move their *allocated* bytes, memory its dynamic-min bytes, so the overall
fraction is bytes done / bytes total and never decreases. It only reaches 1.0 when the
migration has succeeded (`finish`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# XAPI's memory phase tops out at 10/11 (VM_save weight 10, VM_rename 1) before 1.0.
MEMORY_PHASE_END = 10 / 11
# A drop this large in XAPI's progress during storage motion means the memory phase began.
PHASE_RESTART_DROP = 0.3
RUNNING_CAP = 0.99
# The rate is measured over the samples of the last RATE_WINDOW_S seconds of the current
# phase: long enough to smooth XAPI's batched, jittery updates, short enough to follow a
# changing link. A count of samples would span wildly different times as batching varies.
RATE_WINDOW_S = 5.0
# No rate (so no ETA) before this many samples: the first step of a phase is mostly setup
# (snapshot, mirror, reservation), and a rate over it says nothing about the transfer.
MIN_RATE_SAMPLES = 4


@dataclass(slots=True)
class ProgressView:
    phase: str  # preflight | disks | memory | finishing | done
    progress: float
    bytes_done: int
    bytes_total: int
    rate: float | None  # bytes per second
    eta: float | None  # seconds


class ProgressTracker:
    def __init__(
        self,
        *,
        storage_motion: bool,
        disk_bytes: int,
        memory_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage_motion = storage_motion
        self.disk_total = disk_bytes if storage_motion else 0
        self.memory_total = max(memory_bytes, 1)
        self._clock = clock
        self.phase = "preflight"
        self.transferring = False
        self._disk_done = 0.0
        self._memory_done = 0.0
        self._max_xapi = 0.0
        self._progress = 0.0
        self._samples: deque[tuple[float, float]] = deque()

    @property
    def bytes_total(self) -> int:
        return self.disk_total + self.memory_total

    @property
    def bytes_done(self) -> int:
        return round(self._disk_done + self._memory_done)

    def start_transfer(self) -> None:
        """The XAPI migration task exists; its phases begin with its first progress."""
        self.transferring = True
        self._max_xapi = 0.0
        self._samples.clear()

    def observe(self, xapi_progress: float) -> None:
        p = min(1.0, max(0.0, xapi_progress))
        if self.phase == "preflight":
            if p <= 0.0:
                return  # XAPI is still checking and reserving
            self.transferring = True
            self.phase = "disks" if self.storage_motion and self.disk_total else "memory"
            self._sample_at_start()
        if self.phase == "disks":
            if self._max_xapi - p >= PHASE_RESTART_DROP:
                self._disk_done = float(self.disk_total)
                self.phase = "memory"
                self._max_xapi = 0.0
                self._sample_at_start()  # memory moves at its own rate: measure it afresh
            else:
                self._max_xapi = max(self._max_xapi, p)
                self._disk_done = max(self._disk_done, p * self.disk_total)
                self._sample()
                return
        if self.phase in ("memory", "finishing"):
            fraction = min(1.0, p / MEMORY_PHASE_END)
            self._memory_done = max(self._memory_done, fraction * self.memory_total)
            if fraction >= 1.0:
                self.phase = "finishing"
            self._max_xapi = max(self._max_xapi, p)
        self._sample()

    def enter_finishing(self) -> None:
        """XAPI stopped accepting cancellation after the memory copy: the switch-over."""
        if self.phase == "memory":
            self._memory_done = float(self.memory_total)
            self.phase = "finishing"
            self._sample()

    def resume(self, phase: str, progress: float) -> None:
        """Go on with a transfer that was under way before we lost sight of it (a server
        restart) from its last known phase and progress; XAPI's task keeps its own."""
        self.start_transfer()
        if phase == "disks" and self.storage_motion and self.disk_total:
            self.phase = "disks"
            self._disk_done = min(float(self.disk_total), progress * self.bytes_total)
            self._max_xapi = self._disk_done / self.disk_total  # to notice the memory phase
        elif phase in ("memory", "finishing"):
            self.phase = phase
            self._disk_done = float(self.disk_total)
        self.floor(progress)

    def _sample_at_start(self) -> None:
        self._samples.clear()
        self._samples.append((self._clock(), self._disk_done + self._memory_done))

    def floor(self, progress: float) -> None:
        """Never report less than `progress` (a retried transfer keeps what was shown)."""
        self._progress = max(self._progress, min(RUNNING_CAP, progress))

    def finish(self) -> None:
        self._disk_done = float(self.disk_total)
        self._memory_done = float(self.memory_total)
        self.phase = "done"
        self._progress = 1.0

    def _sample(self) -> None:
        now = self._clock()
        self._samples.append((now, self._disk_done + self._memory_done))
        while len(self._samples) > MIN_RATE_SAMPLES and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        fraction = (self._disk_done + self._memory_done) / self.bytes_total
        self._progress = max(self._progress, min(RUNNING_CAP, fraction))

    def rate(self) -> float | None:
        if len(self._samples) < MIN_RATE_SAMPLES:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or b1 <= b0:
            return None
        return (b1 - b0) / (t1 - t0)

    def view(self) -> ProgressView:
        rate = self.rate()
        eta: float | None = None
        if self.phase == "done":
            eta = 0.0
        elif rate:
            eta = max(0.0, (self.bytes_total - self.bytes_done) / rate)
        return ProgressView(
            phase=self.phase,
            progress=round(self._progress, 4) if self.phase != "done" else 1.0,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            rate=rate,
            eta=None if eta is None else round(eta, 2),
        )
