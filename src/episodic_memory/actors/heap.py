"""Keep an actor's long-lived heap out of the garbage collector's full passes.

A Ray worker holds ~130k tracked objects once Ray, pydantic and numpy are imported, and the
index actor ~0.6M more for a million episodes' learned state (mostly the naive-Bayes
postings). A full (generation 2) collection walks all of them with the GIL held: 50–150 ms,
landing on whichever call is in flight. That state lives as long as the actor, so each actor
collects once when it has opened and freezes what survived (``gc.freeze``), and again after
every later full collection: garbage has just been freed then, so nothing dead is frozen,
and each long-lived object is walked by a full pass about once instead of every time.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["keep_long_lived_frozen"]


def _freeze_after_full_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def keep_long_lived_frozen() -> None:
    """Collect and freeze now, and freeze the survivors of every later full collection."""
    gc.collect()
    gc.freeze()
    if _freeze_after_full_collection not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full_collection)
