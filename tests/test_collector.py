"""The long-running servers keep the collector's full passes rare and short once they are up."""

from __future__ import annotations

import gc

from trading.collector import FULL_COLLECTION_AFTER, settle_collector


def test_start_up_objects_are_frozen_and_full_passes_come_less_often() -> None:
    before = gc.get_threshold()
    built_at_start_up = [object() for _ in range(10)] + [[] for _ in range(10)]
    try:
        settle_collector()
        assert gc.get_freeze_count() >= len(built_at_start_up)
        assert gc.get_threshold() == (before[0], before[1], FULL_COLLECTION_AFTER)
        assert FULL_COLLECTION_AFTER > before[2]
        # Frozen objects are out of the collector's sight: a full pass does not walk them.
        tracked = {id(o) for o in gc.get_objects(generation=2)}
        assert not any(id(o) in tracked for o in built_at_start_up[10:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
