"""Rate-limited logging: a failure that repeats (EMFILE on accept, a client retrying a bad
request in a loop, refused connections) writes a few lines, not megabytes.

Records are grouped by (logger, level, message template): at most `burst` of a group per
`window_s`; the rest are counted, and the group's next line once the window has passed says
how many were left out (`suppressed=N`). Distinct messages are never grouped together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

_MAX_GROUPS = 1024


class RateLimitFilter(logging.Filter):
    def __init__(
        self, burst: int = 10, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._burst = burst
        self._window = window_s
        self._clock = clock
        # group -> [window start, lines let through in it, lines suppressed]
        self._groups: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        group = self._groups.get(key)
        if group is None or now - group[0] >= self._window:
            suppressed = int(group[2]) if group is not None else 0
            if group is None and len(self._groups) >= _MAX_GROUPS:
                self._forget_old(now)
            self._groups[key] = [now, 1.0, 0.0]
            if suppressed:
                record.msg = f"{record.getMessage()} suppressed={suppressed}"
                record.args = None
            return True
        if group[1] < self._burst:
            group[1] += 1
            return True
        group[2] += 1
        return False

    def _forget_old(self, now: float) -> None:
        self._groups = {k: g for k, g in self._groups.items() if now - g[0] < self._window}
        while len(self._groups) >= _MAX_GROUPS:  # all recent: drop the oldest
            del self._groups[next(iter(self._groups))]


def install(burst: int = 10, window_s: float = 10.0) -> RateLimitFilter:
    """Rate-limit every handler of the root logger (call after logging.basicConfig)."""
    flt = RateLimitFilter(burst, window_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
    return flt
