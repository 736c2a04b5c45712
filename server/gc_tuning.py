"""Interpreter settings for the server process (set by its owner, `xo-migrate serve`).

The server holds a large, long-lived object graph (the cache of every pool) and allocates
many short-lived dicts per event batch. CPython's default thresholds then scan the young
generations very often during migration bursts and initial syncs; collecting them less often
keeps those scans rare. After each initial sync the cache (10,000 VMs: ~260,000 tracked
objects) is frozen out of the collector: a full collection over it stalls the event loop
~150 ms per 10,000 VMs; frozen objects are still freed by reference counting when replaced.
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 50_000  # allocations between young collections (default 700)
SWITCH_INTERVAL_S = 0.001  # default 0.005


_tuned = False  # set by tune_for_server: this process is a server, its owner said so


def tune_for_server() -> None:
    global _tuned
    _tuned = True
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
    # XAPI answers are parsed in worker threads (pure-Python XML-RPC); a shorter GIL switch
    # interval lets the event loop take the GIL back sooner while they parse.
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_long_lived(_pool: str = "") -> None:
    """Move every object alive now (a pool's freshly synced cache) out of the collector's
    reach (gc.freeze): later collections scan only what came after. Only in a process tuned
    as a server: elsewhere (tests running many servers) frozen cycles would never be freed."""
    if _tuned:
        # The youngest generation only (~5 ms): collecting the older one would scan the whole
        # fresh cache again (~100 ms per 10,000 VMs). A cycle that died in the sync's older
        # generation stays allocated: a few KiB per sync at most.
        gc.collect(0)
        gc.freeze()
