"""Bulk ingest across the Ray cluster: each batch prepared and written by one Ray task.

Preparing a batch — validation, redaction, reward, reflection, SQL rows — is ~0.5 ms of Python
per episode and needs no state, so the Ray backend runs it where the CPUs are: one task per
batch, which then writes its batch itself through the storage and index actors (``BatchWriter``:
three or four actor calls, none per episode). The driver only reads the input, hands raw records
to tasks and counts their results in input order, so an ingest scales with the cluster rather
than with one process's GIL. A task Ray retries after its worker died rewrites nothing: stored
episodes are skipped and steps are keyed by number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import ray

from episodic_memory.actors.proxies import IndexProxy, StorageProxy
from episodic_memory.config import InputLimits
from episodic_memory.ingest.prepare import prepare_batch
from episodic_memory.ingest.run import BatchWriter
from episodic_memory.storage.bulk import BatchResult

__all__ = ["MAX_PARALLEL_BATCHES", "ingest_batch", "parallel_batches"]

MAX_PARALLEL_BATCHES = 32


def parallel_batches() -> int:
    """Batches in flight: one per CPU of the cluster, plus one being read and sent."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(2, min(MAX_PARALLEL_BATCHES, int(resources.get("CPU", 1)) + 1))


async def _run(
    storage: Any, index: Any, items: Sequence[tuple[str, object]], learn: bool, limits: InputLimits
) -> BatchResult:
    writer = BatchWriter(StorageProxy(storage), IndexProxy(index), headers_only=True)
    return await writer.write(prepare_batch(items, learn=learn, limits=limits))


# No CPU reservation: an ingest started from inside a Ray task (which holds a CPU) on a busy
# cluster must not wait forever for a free one. ``parallel_batches`` bounds how many run at
# once instead, and SPREAD puts them on every node rather than packing the driver's.
@ray.remote(num_cpus=0, scheduling_strategy="SPREAD")
def ingest_batch(
    storage: Any, index: Any, items: Sequence[tuple[str, object]], learn: bool, limits: InputLimits
) -> BatchResult:
    """Prepare and write one batch (a bad record raises before anything of it is written)."""
    return asyncio.run(_run(storage, index, items, learn, limits))
