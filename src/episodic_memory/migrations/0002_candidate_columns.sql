-- 0002: what ranking needs from a completed episode, next to its header, so retrieval reads
-- one row per candidate instead of the episode's JSON and every step.
-- tool_path: JSON array of the tools in step order, consecutive repeats collapsed.
-- recovered: 1 when a step failed and a later step succeeded.
-- Both are written when an episode is sealed. Rows sealed before this migration keep NULL;
-- readers then derive the same values from the steps table (storage/candidates.py).
ALTER TABLE episodes ADD COLUMN tool_path TEXT;
ALTER TABLE episodes ADD COLUMN recovered INTEGER;
