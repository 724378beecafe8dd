-- 0003: per-word document counts of the full-text index, read by storage/keyword_plan.py to
-- keep only a query's rarest words once the memory is large. fts5vocab is a view over the
-- FTS5 index itself: it stores nothing and is always current.
CREATE VIRTUAL TABLE episodes_fts_vocab USING fts5vocab(episodes_fts, 'row');
