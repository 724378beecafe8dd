"""Bulk ingest: many finished episodes into the memory in large batches, resumably.

``SelfLearningMemory.bulk_ingest`` / ``import_file`` (and the same on ``SyncMemory``) run
``run_ingest`` here over the memory's backend. Agents log live work through
start/log_steps/complete (several actor calls per episode); history, migrations and benchmarks
arrive all at once and should cost little more than writing the rows. So the input is read a
batch at a time (default 1,000 episodes) and each batch is:

1. **prepared** (``prepare.py``; CPU only): each record validated into an ``Episode`` (older JSON
   shapes load), steps numbered, every text redacted (``core.sanitize``), the task type
   classified when none was given, and reward and reflection computed for completed episodes
   that lack them, exactly as ``complete_episode`` would; then its SQL rows built
   (``storage/bulk.py``). In-process this runs on a worker thread; the Ray backend runs one
   Ray task per batch (``actors/ingest_task.py``), so preparing scales with the cluster's CPUs;
2. **written** (``run.BatchWriter``; 3 service calls per batch, 4 with ``learn=False``, none per
   episode): storage says which ids it holds already (they are kept as stored and counted as
   skipped), the index embeds and adds the new completed ones (an upsert), then ONE storage call
   writes steps, vectors, headers, full-text rows and learned marks in one transaction. Vectors
   commit with their headers, so a stored episode always has its vector and "stored" means
   "done": that is what makes reruns and resumes exact.

Several batches are in flight at once (``ingest_parallelism``: 3 in-process, the cluster's CPUs
plus one on Ray); results are counted, reported (``progress(done, total)``) and checkpointed in
input order. Memory is bounded by the batches in flight, whatever the input's size: iterables
(sync or async) and files are read as they go.

**Bad input.** The first bad record raises ``ValidationError`` naming its position and field
(``episodes[17].steps.3.tool``, ``history.jsonl:42.outcome.verdict``); nothing of its batch is
written. Batches before it are written and checkpointed; a batch after it that was already in
flight may be written too, but is not checkpointed — fix the record and run again: what is
stored is skipped. We raise rather than skip-and-report: a silently dropped episode is worse
than a stopped import that resumes in seconds.

**Learning.** ``learn=True`` (default): episodes are stored unlearned and the learner pool
learns them in the background from storage's ``unlearned_episode_ids`` — the same durable pass
that makes learning crash-safe (Ray learners: at start and every 30 s; in-process: a task
started when the ingest returns, stopped by ``close()`` between batches). Ingest never waits
for learning, so a million episodes are stored at ingest speed; ``settle()`` waits for it.
``learn=False``: episodes are marked learned in the write transaction (no patterns or
heuristics from them, ever) and the tool predictor is taught from them directly. An export's
``"learned": true`` lines are marked the same way (their patterns come with the file). Either
way nothing is learned twice: storage's ``learned_at`` mark is the guard.

**Checkpoint.** With ``checkpoint=`` a small JSON file records, after each committed batch and
atomically (temporary file, fsync, rename), how much of the input is durably in: a position
(records of an iterable, lines of a file), the SHA-256 of that consumed prefix, the target
database and the counts so far. A run that finds it passes over the prefix — after checking the
digest, so a different input or memory is refused, while a file whose later, rejected line was
fixed still resumes — and finishes with the same result as an uninterrupted run. It is deleted
when the input is done. Without one a rerun is still correct (stored episodes are skipped),
only slower.

Ids: records without an ``episode_id`` get one derived from their content and position, so
rerunning the same input is idempotent for them too. Rate limits do not apply (an operator's
call, not an agent's).
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
