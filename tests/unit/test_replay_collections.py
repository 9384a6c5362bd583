"""The replay's bulk phase holds the garbage collector back, and gives it back as it was."""

from __future__ import annotations

import gc

import pytest

from workers.replay import _few_collections


def test_the_collector_is_held_back_during_the_bulk_phase_and_restored_after() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with _few_collections():
        assert gc.get_threshold()[0] >= 10 * before[0]
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    if not frozen:
        assert gc.get_freeze_count() == 0


def test_restored_when_the_bulk_phase_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), _few_collections():
        raise RuntimeError("a batch failed")
    assert gc.get_threshold() == before
