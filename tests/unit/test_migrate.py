"""Migration files: found in the package, numbered, split the way SQLite itself reads them."""

from __future__ import annotations

import hashlib

import pytest

from episodic_memory.errors import SchemaVersionError
from episodic_memory.storage.migrate import latest_version, load_migrations, split_statements


def test_the_package_ships_numbered_migrations_starting_with_the_initial_schema() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    first = migrations[0]
    assert (first.version, first.name, first.label) == (1, "initial", "0001_initial")
    assert first.checksum == hashlib.sha256(first.sql.encode()).hexdigest()
    assert latest_version() == migrations[-1].version


def test_the_initial_schema_creates_every_table_and_index_the_store_needs() -> None:
    text = load_migrations()[0].sql
    for name in ("episodes", "steps", "patterns", "heuristics", "embeddings"):
        assert f"CREATE TABLE {name} (" in text
    assert "USING fts5" in text
    for index in (
        "(task_type, started_at DESC)",
        "(domain, started_at DESC)",
        "(verdict)",
        "(started_at DESC)",
        "(status, learned_at)",
    ):
        assert index in text


def test_statements_split_where_sqlite_says_they_end() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'semi;colon'); CREATE TABLE b (y);
    /* block; comment */
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        INSERT INTO b VALUES (1);
        INSERT INTO b VALUES (2);
    END;
    ;
    -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0].endswith("DEFAULT 'semi;colon');")
    assert statements[1] == "CREATE TABLE b (y);"
    assert statements[2].endswith("INSERT INTO b VALUES (2);\n    END;")


def test_a_script_ending_without_a_semicolon_is_refused() -> None:
    with pytest.raises(SchemaVersionError, match="without ';'"):
        split_statements("CREATE TABLE a (x);\nCREATE TABLE b (y)\n")
