"""Actors keep their long-lived heap frozen: garbage is collected first, survivors frozen."""

from __future__ import annotations

import textwrap

from tests.support.child import run_python

PROBE = textwrap.dedent(
    """
    import gc, weakref
    from episodic_memory.actors.heap import keep_long_lived_frozen

    class Node:
        pass

    def garbage_cycle():
        node = Node()
        node.me = node  # only a collection frees it
        return weakref.ref(node)

    kept = [Node() for _ in range(1000)]  # live state, like a restored predictor
    dead = garbage_cycle()
    keep_long_lived_frozen()
    assert dead() is None, "garbage must be collected before a freeze, or it stays forever"
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)

    learned = [Node() for _ in range(5000)]  # state learned later
    dead = garbage_cycle()
    gc.collect()  # any full collection, automatic or not
    assert dead() is None
    assert gc.get_freeze_count() >= frozen + len(learned)
    print("ok")
    """
)


def test_survivors_of_each_full_collection_are_frozen_and_garbage_is_not() -> None:
    # A child process: freezing the test runner's own heap would outlive this test.
    result = run_python(PROBE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
