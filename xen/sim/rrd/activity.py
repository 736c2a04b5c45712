"""What the lab's hosts have been doing, for their stats: the network traffic of migrations.

A migration's disk and memory copies go through the hosts' management domains: the source
host's NIC on the migration network sends, the destination's receives (a VM's own VIFs do not
carry that stream). Each copy is recorded as a window of wall-clock time at a rate in bytes/s
(the lab's timing model), which the hosts' `pif_<device>_tx/rx` data sources add up.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

MAX_WINDOWS = 10_000  # the oldest are forgotten beyond this (they left every RRA long ago)


@dataclass(slots=True)
class Window:
    host: str  # host ref
    device: str  # the PIF's device, e.g. "eth1"
    direction: str  # "tx" | "rx"
    rate: float  # bytes/s
    start: float  # wall-clock seconds
    end: float | None = None  # None while the copy runs


class ActivityLog:
    def __init__(self) -> None:
        self._windows: deque[Window] = deque(maxlen=MAX_WINDOWS)

    def begin(self, host: str, device: str, direction: str, rate: float) -> Window:
        window = Window(host, device, direction, rate, time.time())
        self._windows.append(window)
        return window

    @staticmethod
    def end(window: Window) -> None:
        if window.end is None:
            window.end = time.time()

    def windows(self, host: str, device: str, direction: str) -> list[Window]:
        return [
            w
            for w in self._windows
            if w.host == host and w.device == device and w.direction == direction
        ]


def average_rate(windows: list[Window], t0: float, t1: float) -> float:
    """Average bytes/s the windows moved over [t0, t1]."""
    if t1 <= t0:
        return 0.0
    now = time.time()
    moved = 0.0
    for w in windows:
        overlap = min(t1, now if w.end is None else w.end) - max(t0, w.start)
        if overlap > 0:
            moved += w.rate * overlap
    return moved / (t1 - t0)
