"""Suite-wide set-up. Ray must stay on loopback: set before anything imports and starts Ray.

``ray_session`` is the one local Ray of a pytest run, shared by tests/integration and
tests/faults (a process can initialise Ray once); ``import ray`` waits until it is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

RAY_NAMESPACE = "episodic-memory-tests"


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """Start the session's one local Ray; yield its GCS address (for second drivers).

    Shared by tests/integration and tests/faults (Ray can be initialised once per process).
    """
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024**2,
        namespace=RAY_NAMESPACE,
        log_to_driver=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
