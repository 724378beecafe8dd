-- 0001 initial schema. Applied in one transaction by storage/migrate.py, which owns
-- schema_migrations. Rules: never edit an applied migration; add NNNN_name.sql instead.
-- Timestamps: the JSON in `data` keeps the exact ISO value; REAL epoch-second columns exist
-- only for indexing and filtering.

-- `seq` is an explicit INTEGER PRIMARY KEY so the FTS row of an episode can be addressed by
-- rowid: implicit rowids may be renumbered by VACUUM, explicit ones never are. episode_id is
-- UNIQUE, which is the same B-tree a TEXT PRIMARY KEY would create.
CREATE TABLE episodes (
    seq            INTEGER PRIMARY KEY,
    episode_id     TEXT    NOT NULL UNIQUE,
    task_type      TEXT    NOT NULL,
    domain         TEXT    NOT NULL,
    language       TEXT,
    agent_id       TEXT,
    status         TEXT    NOT NULL,
    verdict        TEXT,
    reward_total   REAL,
    started_at     REAL    NOT NULL,
    completed_at   REAL,
    revision       INTEGER NOT NULL DEFAULT 0,
    learned_at     REAL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL  -- Episode JSON without steps
);

CREATE INDEX episodes_task_type_started ON episodes (task_type, started_at DESC);
CREATE INDEX episodes_domain_started ON episodes (domain, started_at DESC);
CREATE INDEX episodes_verdict ON episodes (verdict);
CREATE INDEX episodes_started ON episodes (started_at DESC);
CREATE INDEX episodes_status_learned ON episodes (status, learned_at);

-- Append-only: logging a step never rewrites its episode; (episode_id, step_number) makes a
-- retried flush harmless (INSERT OR IGNORE).
CREATE TABLE steps (
    episode_id     TEXT    NOT NULL,
    step_number    INTEGER NOT NULL,
    tool           TEXT    NOT NULL,
    success        INTEGER NOT NULL,
    timestamp      REAL    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,  -- ExecutionStep JSON
    PRIMARY KEY (episode_id, step_number)
);

-- rowid = episodes.seq. Description is written with the header; steps_text (tools, actions,
-- observations, errors) when the episode is completed.
CREATE VIRTUAL TABLE episodes_fts USING fts5 (
    episode_id UNINDEXED,
    domain UNINDEXED,
    description,
    steps_text,
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TABLE patterns (
    pattern_id     TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL,
    domain         TEXT    NOT NULL,
    confidence     REAL    NOT NULL,
    occurrences    INTEGER NOT NULL,
    updated_at     REAL    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL
);

CREATE INDEX patterns_domain_confidence ON patterns (domain, confidence DESC);

CREATE TABLE heuristics (
    heuristic_id   TEXT    PRIMARY KEY,
    domain         TEXT    NOT NULL,
    confidence     REAL    NOT NULL,
    evidence_count INTEGER NOT NULL,
    updated_at     REAL    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL
);

CREATE INDEX heuristics_domain_confidence ON heuristics (domain, confidence DESC);

CREATE TABLE embeddings (
    episode_id TEXT    PRIMARY KEY,
    model      TEXT    NOT NULL,
    dim        INTEGER NOT NULL,
    vector     BLOB    NOT NULL  -- little-endian float32, dim * 4 bytes
);

CREATE INDEX embeddings_model ON embeddings (model, episode_id);
