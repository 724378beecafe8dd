"""The public API is what ``__all__`` says; this pins it so changes are deliberate."""

from __future__ import annotations

import episodic_memory


def test_every_name_in_all_is_importable_from_the_package() -> None:
    for name in episodic_memory.__all__:
        assert hasattr(episodic_memory, name), name


def test_all_is_sorted_and_has_no_duplicates() -> None:
    names = list(episodic_memory.__all__)
    assert names == sorted(names, key=str.lower) or names == sorted(names)
    assert len(names) == len(set(names))


def test_public_errors_share_one_root() -> None:
    for name in episodic_memory.__all__:
        obj = getattr(episodic_memory, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, episodic_memory.EpisodicMemoryError), name
