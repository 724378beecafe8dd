"""Actors freeze their long-lived heap once open, after collecting what is already garbage."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import gc, weakref
    from episodic_memory.actors.heap import freeze_long_lived

    class Node:
        pass

    kept = [Node() for _ in range(1000)]  # live state, like a restored predictor
    cycle = Node()
    cycle.me = cycle  # garbage that only a collection frees
    dead = weakref.ref(cycle)
    del cycle
    assert dead() is not None
    freeze_long_lived()
    assert dead() is None, "garbage must be collected before the freeze, or it stays forever"
    assert gc.get_freeze_count() >= len(kept)
    assert all(not gc.is_finalized(n) for n in kept)
    print("ok")
    """
)


def test_freezing_collects_garbage_first_and_freezes_what_lives() -> None:
    # A child process: freezing the test runner's own heap would outlive this test.
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
