"""Interpreter settings for the server process (set by its owner, `xo-migrate serve`).

The server holds a large, long-lived object graph (the cache of every pool) and allocates
many short-lived dicts per event batch. CPython's default thresholds then scan the young
generations very often during migration bursts and initial syncs; collecting them less often
keeps those scans rare. During a pool's full sync the collector is off, and after it the cache
(10,000 VMs: ~260,000 tracked objects) is frozen out of the collector: a full collection over
it stalls the event loop ~150 ms per 10,000 VMs; frozen objects are still freed by reference
counting when replaced.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

YOUNG_THRESHOLD = 50_000  # allocations between young collections (default 700)
SWITCH_INTERVAL_S = 0.001  # default 0.005


_tuned = False  # set by tune_for_server: this process is a server, its owner said so
_syncing = 0  # pools loading a full snapshot now (the collector is off meanwhile)


def tune_for_server() -> None:
    global _tuned
    _tuned = True
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
    # XAPI answers are parsed in worker threads (pure-Python XML-RPC); a shorter GIL switch
    # interval lets the event loop take the GIL back sooner while they parse.
    sys.setswitchinterval(SWITCH_INTERVAL_S)


@contextlib.contextmanager
def full_sync() -> Iterator[None]:
    """Around a pool's full sync (xen/pool.py `full_sync`), in a process tuned as a server:
    the collector is off while any pool loads its snapshot, then everything alive (the fresh
    caches) is frozen out of its reach (gc.freeze).

    Why off: a 10,000-VM snapshot allocates millions of objects that all survive into the
    cache; each collection of the middle generation rescans up to a million of them, holding
    the GIL ~250 ms, and the event loop stalls that long. Nothing a sync allocates is cyclic
    garbage worth collecting (JSON values, converted objects), and frozen objects are still
    freed by reference counting when replaced. Elsewhere (tests running many servers in one
    process) this does nothing: frozen cycles would never be freed."""
    global _syncing
    if not _tuned:
        yield
        return
    _syncing += 1
    if _syncing == 1:
        gc.disable()
    try:
        yield
    finally:
        _syncing -= 1
        if _syncing == 0:
            # Not gc.collect first: with the collector off, the youngest generation holds the
            # whole sync, and collecting it would be the very stall avoided here.
            gc.freeze()
            gc.enable()
