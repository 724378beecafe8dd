"""Unit tests exercise plain classes only: starting Ray here is a bug, so make it fail loudly."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray_init(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("unit tests must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)
