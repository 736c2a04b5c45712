"""In a process tuned as a server, the collector is off while any pool loads a full snapshot
(a middle-generation collection over it held the GIL ~250 ms), and what the syncs built is
frozen out of its reach after; elsewhere nothing changes."""

from __future__ import annotations

import gc

import pytest

from server import gc_tuning


def test_the_collector_is_off_while_any_full_sync_runs_then_the_cache_is_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gc_tuning, "_tuned", True)
    frozen_before = gc.get_freeze_count()
    try:
        with gc_tuning.full_sync():
            assert not gc.isenabled()
            cache = [{"vm": n} for n in range(1000)]
            with gc_tuning.full_sync():  # a second pool syncing at the same time
                assert not gc.isenabled()
            assert not gc.isenabled()  # the first one still loads
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(cache)
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_failed_sync_turns_the_collector_back_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_tuning, "_tuned", True)
    try:
        with pytest.raises(ConnectionError), gc_tuning.full_sync():
            raise ConnectionError("the pool went away")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_outside_a_server_process_nothing_changes() -> None:
    frozen_before = gc.get_freeze_count()
    with gc_tuning.full_sync():
        assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before
