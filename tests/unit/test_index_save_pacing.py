"""The index actor's periodic saves take a bounded share of its time."""

from __future__ import annotations

import pytest

from episodic_memory.actors.index import SAVE_INTERVAL_S, SAVE_SHARE, next_save_delay


def test_quick_saves_keep_the_base_interval() -> None:
    assert next_save_delay(0.0) == SAVE_INTERVAL_S
    assert next_save_delay(0.5) == SAVE_INTERVAL_S


def test_a_slow_save_stretches_the_interval_to_its_share() -> None:
    delay = next_save_delay(5.5)  # measured at a million episodes
    assert delay > SAVE_INTERVAL_S
    assert 5.5 / delay == pytest.approx(SAVE_SHARE)
