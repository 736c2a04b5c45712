"""Interpreter settings for the server process (set by its owner, `xo-migrate serve`).

The server holds a large, long-lived object graph (the cache of every pool) and allocates
many short-lived dicts per event batch. CPython's default thresholds then scan the young
generations very often during migration bursts and initial syncs; collecting them less often
keeps those scans rare.
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 50_000  # allocations between young collections (default 700)
SWITCH_INTERVAL_S = 0.001  # default 0.005


def tune_for_server() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
    # XAPI answers are parsed in worker threads (pure-Python XML-RPC); a shorter GIL switch
    # interval lets the event loop take the GIL back sooner while they parse.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
