"""Progress translation: XAPI's backwards-going progress becomes monotonic bytes with an ETA."""

from __future__ import annotations

from server.migrations.progress import MEMORY_PHASE_END, ProgressTracker

GIB = 1 << 30


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_storage_motion_progress_never_goes_back_when_xapi_restarts() -> None:
    clock = FakeClock()
    t = ProgressTracker(storage_motion=True, disk_bytes=8 * GIB, memory_bytes=2 * GIB, clock=clock)
    seen = []
    xapi = [0.0, 0.2, 0.5, 0.9, 1.0, 0.0, 0.3, 0.6, MEMORY_PHASE_END, 1.0]
    for p in xapi:
        clock.now += 1
        t.observe(p)
        seen.append(t.view())
    progress = [v.progress for v in seen]
    assert progress == sorted(progress)
    assert max(progress) < 1.0
    assert seen[4].phase == "disks" and seen[5].phase == "memory"
    assert seen[-1].phase == "finishing"
    t.finish()
    assert t.view().progress == 1.0 and t.view().bytes_done == 10 * GIB and t.view().eta == 0


def test_eta_is_exact_at_constant_rate() -> None:
    clock = FakeClock()
    t = ProgressTracker(storage_motion=False, disk_bytes=0, memory_bytes=100, clock=clock)
    t.start_transfer()
    for step in range(1, 10):
        clock.now = step
        t.observe(step / 10 * MEMORY_PHASE_END)
    view = t.view()
    assert view.rate is not None and abs(view.rate - 10) < 1e-6
    assert view.eta is not None and abs(view.eta - 1.0) < 0.05


def test_pool_migrate_counts_only_memory() -> None:
    t = ProgressTracker(storage_motion=False, disk_bytes=50 * GIB, memory_bytes=4 * GIB)
    assert t.bytes_total == 4 * GIB
    t.observe(MEMORY_PHASE_END / 2)
    assert t.view().phase == "memory" and abs(t.view().progress - 0.5) < 0.01
