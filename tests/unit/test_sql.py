"""The SQL builders: parameters only, idempotent appends, FTS queries that cannot be syntax."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.storage import candidates as candidate_sql
from episodic_memory.storage import sql
from episodic_memory.storage.base import EpisodeQuery

printable = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))


def test_an_episode_header_is_stored_without_its_steps() -> None:
    episode = Episode(
        task_description="x",
        steps=[ExecutionStep(step_number=1, tool="very-distinctive-tool")],
    )
    [(upsert, params), _, _] = sql.upsert_episode(episode)
    assert "ON CONFLICT (episode_id) DO UPDATE" in upsert
    assert "learned_at" not in upsert  # the writer never resets what the learner recorded
    data = params[-3]
    assert isinstance(data, str)
    assert "very-distinctive-tool" not in data
    assert '"steps"' not in data
    assert params[-2:] == (None, None)  # an active episode has no tool path yet


def test_a_sealed_episode_stores_its_collapsed_tool_path_and_recovery() -> None:
    steps = [
        ExecutionStep(step_number=1, tool="read"),
        ExecutionStep(step_number=2, tool="test", success=False),
        ExecutionStep(step_number=3, tool="test"),
        ExecutionStep(step_number=4, tool="edit"),
    ]
    episode = Episode(
        task_description="x", steps=steps, status="completed", outcome=TaskOutcome.success()
    )
    [(upsert, params), _, _] = sql.upsert_episode(episode)
    assert params[-2:] == ('["read","test","edit"]', 1)
    assert "tool_path = coalesce(excluded.tool_path, tool_path)" in upsert


def test_only_a_completed_episode_indexes_its_steps_text() -> None:
    active = Episode(task_description="x")
    completed = active.model_copy(update={"status": "completed", "outcome": TaskOutcome.success()})
    assert "FROM steps" not in sql.upsert_episode(active)[2][0]
    assert "FROM steps" in sql.upsert_episode(completed)[2][0]


def test_steps_are_appended_with_insert_or_ignore() -> None:
    statement, params = sql.insert_step("e1", ExecutionStep(step_number=3, tool="t"))
    assert statement.startswith("INSERT OR IGNORE INTO steps")
    assert params[:4] == ("e1", 3, "t", 1)


@given(value=printable)
def test_filter_values_travel_as_parameters_never_as_sql_text(value: str) -> None:
    query = EpisodeQuery(domain=value or "d", task_type=value or "t")
    statement, params = sql.list_episodes(query)
    assert (value or "d") in params
    # The SQL text is the same whatever the values: they never reach it. (Searching the text
    # for the value gave false alarms: 'type' is part of the column name task_type.)
    assert statement == sql.list_episodes(EpisodeQuery(domain="d", task_type="t"))[0]


def test_list_episodes_uses_only_indexed_filters_and_newest_first() -> None:
    statement, params = sql.list_episodes(
        EpisodeQuery(
            domain="web",
            verdict="success",
            started_after=datetime(2025, 1, 1, tzinfo=UTC),
            limit=5,
            offset=10,
        )
    )
    assert "domain = ?" in statement
    assert "verdict = ?" in statement
    assert "started_at >= ?" in statement
    assert "ORDER BY started_at DESC" in statement
    assert params[-2:] == (5, 10)


def test_the_fts_expression_quotes_each_word_and_ors_them() -> None:
    assert sql.fts_match_expression('deploy NEAR(x) "y" c*b') == (
        '"deploy" OR "NEAR" OR "x" OR "y" OR "c" OR "b"'
    )


def test_the_fts_expression_drops_repeats_and_caps_the_words() -> None:
    assert sql.fts_match_expression("Go go GO stop") == '"Go" OR "stop"'
    many = " ".join(f"w{n}" for n in range(100))
    expression = sql.fts_match_expression(many)
    assert expression is not None
    assert expression.count(" OR ") == sql.MAX_FTS_TERMS - 1


def test_stopwords_are_dropped_unless_nothing_else_is_left() -> None:
    assert sql.fts_match_expression("fix the parser in the build") == '"fix" OR "parser" OR "build"'
    assert sql.fts_match_expression("to be or not to be") == '"to" OR "be" OR "or" OR "not"'


def test_text_without_words_gives_no_fts_query() -> None:
    assert sql.fts_match_expression(" -- ;; ** ") is None
    assert sql.keyword_search("?!", None, 10) is None


@given(text=printable)
def test_any_user_text_makes_a_valid_fts_query(text: str) -> None:
    expression = sql.fts_match_expression(text)
    if expression is None:
        return
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE f USING fts5 (body)")
        conn.execute("INSERT INTO f VALUES ('deploy the cluster')")
        conn.execute("SELECT rowid FROM f WHERE f MATCH ?", (expression,)).fetchall()
    finally:
        conn.close()


def test_keyword_search_filters_completed_episodes_and_binds_the_domain() -> None:
    statement = sql.keyword_search("deploy", "web", 7)
    assert statement is not None
    text, params = statement
    assert "e.status = 'completed'" in text
    assert "bm25(" in text
    assert params == ('"deploy"', "web", 7)


def test_every_builder_produces_sql_sqlite_can_prepare() -> None:
    conn = sqlite3.connect(":memory:")
    from episodic_memory.storage.migrate import load_migrations, split_statements

    for migration in load_migrations():
        for statement in split_statements(migration.sql):
            conn.execute(statement)
    episode = Episode(
        task_description="d",
        context=TaskContext(domain="web"),
        status="completed",
        outcome=TaskOutcome.success(),
    )
    statements = [
        *sql.upsert_episode(episode),
        sql.insert_step(episode.episode_id, ExecutionStep(step_number=1, tool="t")),
        sql.mark_learned(["a", "b"], 1.0),
        *sql.delete_episodes(["a"]),
        sql.select_episodes(["a"]),
        sql.select_steps(["a"]),
        sql.list_episodes(EpisodeQuery()),
        sql.episodes_page(None, 5),
        sql.episodes_page((1.0, 2), 5),
        sql.episode_versions_page("", 5),
        sql.unlearned_episode_ids(5),
        sql.select_embeddings_page("m", "", 5),
        sql.load_patterns("web", None),
        sql.load_heuristics(None, 3),
        sql.count_rows(),
        candidate_sql.candidate_rows(["a", "b"]),
        candidate_sql.step_outcomes(["a"]),
        *candidate_sql.metadata_candidate_ids("web", "debugging", 5),
        *candidate_sql.metadata_candidate_ids(None, None, 5),
    ]
    try:
        for text, params in statements:
            conn.execute(text, params).fetchall()
    finally:
        conn.close()


def test_the_unlearned_query_walks_the_partial_index_without_sorting() -> None:
    from episodic_memory.storage.migrate import load_migrations, split_statements

    conn = sqlite3.connect(":memory:")
    for migration in load_migrations():
        for statement in split_statements(migration.sql):
            conn.execute(statement)
    text, params = sql.unlearned_episode_ids(10)
    plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {text}", params))
    assert "episodes_unlearned" in plan
    assert "TEMP B-TREE" not in plan  # no sort step
