"""Bulk ingest: many finished episodes into the memory in large batches, resumably.

``SelfLearningMemory.bulk_ingest`` (and ``SyncMemory.bulk_ingest``) run ``run_ingest`` here over
the memory's backend. Agents log live work through start/log_steps/complete (one actor call per
episode at least); history, migrations and benchmarks arrive all at once and should cost what
writing the rows costs. So per batch (default 1,000 episodes):

1. **prepare** (a worker thread of the caller; no I/O): validate each record into an
   ``Episode`` — old JSON shapes load, a bad record raises ``ValidationError`` naming its
   position and field (``episodes[17].steps.3.tool``) and *nothing of its batch* is written
   (batches before it are committed and checkpointed: fix the record and run again) — then
   number the steps, redact secrets (``core.sanitize``), classify the task type when none was
   given, and, for completed episodes that lack them, compute reward and reflection exactly as
   ``complete_episode`` does (``pattern_ids`` stay as given: learning finds the patterns), and
   build the SQL rows (``storage/bulk.py``);
2. **write** (``BatchWriter``; 3 calls per batch, 4 with ``learn=False``, none per episode):
   ask storage which ids it holds already (they are skipped: kept as stored), have the index
   embed and add the new completed ones (an upsert), then ONE storage call writes steps,
   vectors, headers, full-text rows and learned marks in one transaction. Vectors go in with
   the headers, so a stored episode always has its vector and "stored" means "done".

Two batches are in flight while the next is prepared, so the caller's CPU (validation,
redaction) overlaps the storage writer's I/O. Memory is bounded by three batches, whatever the
input's size: iterables (sync or async) are read as they go.

**Learning.** ``learn=True`` (default): episodes are stored unlearned and the learner pool learns
them in the background from storage's ``unlearned_episode_ids`` — the same durable recovery pass
that makes learning crash-safe (Ray learners: at start and every 30 s; in-process: a background
task started when the ingest returns). Ingest never waits for learning; ``settle()`` does.
``learn=False``: episodes are marked learned in the write transaction (no patterns or
heuristics from them; nothing is ever learned twice) and the tool predictor is taught from them
directly. An export's ``"learned": true`` lines are marked the same way (their patterns come
with the file).

**Checkpoint.** With ``checkpoint=`` a small JSON file records, after each committed batch and
atomically, how much of the input is durably in: a position (records of an iterable, lines of
a file), a SHA-256 of that consumed prefix, and the counts so far. A run that finds it skips the
prefix — after checking the digest, so a different input is refused, while one whose later,
rejected record was fixed still resumes — and finishes with the same result as an
uninterrupted run. It is deleted when the input is done. Without a checkpoint a rerun is still
correct (stored episodes are skipped), only slower.

Ids: records without an ``episode_id`` get one derived from their content and position, so
rerunning the same input is idempotent for them too.
"""

from episodic_memory.ingest.prepare import IngestItem, Prepared, prepare_batch, prepare_episode
from episodic_memory.ingest.run import (
    DEFAULT_BATCH_SIZE,
    BatchWriter,
    IngestReport,
    IngestSink,
    Progress,
    run_ingest,
)
from episodic_memory.ingest.sources import IngestCheckpoint, Source, iterable_source

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchWriter",
    "IngestCheckpoint",
    "IngestItem",
    "IngestReport",
    "IngestSink",
    "Prepared",
    "Progress",
    "Source",
    "iterable_source",
    "prepare_batch",
    "prepare_episode",
    "run_ingest",
]
