-- 0003: the learners' recovery query (completed episodes not learned yet, oldest first) walked
-- the (status, learned_at) index and sorted every unlearned row on each call: 0.12 s per call
-- at 200k unlearned, i.e. after a large ingest with learning on. A partial index holds only
-- the unlearned episodes, already in the query's order, and empties as they are learned.
CREATE INDEX episodes_unlearned ON episodes (completed_at, seq)
    WHERE status = 'completed' AND learned_at IS NULL;
