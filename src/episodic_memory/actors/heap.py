"""Keep an actor's long-lived heap out of the garbage collector's full passes.

A Ray worker holds ~130k tracked objects once Ray, pydantic and numpy are imported, and the
index actor ~0.5M more once a million episodes' predictor is restored. A full (gen 2)
collection walks all of them with the GIL held: 50–150 ms, landing on whichever call is in
flight. They live as long as the actor, so each actor collects once when it has opened and
freezes what is left (``gc.freeze``): later full passes only walk what was made since.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_long_lived"]


def freeze_long_lived() -> None:
    """Collect now, then move every surviving object to the permanent generation."""
    gc.collect()
    gc.freeze()
