"""Configuration: environment layering, and tokens that never show up in reprs or dumps."""

from __future__ import annotations

from pathlib import Path

import pytest

from episodic_memory import MemoryConfig, ValidationError

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJhIjoicnciLCJpYXQiOjE3MDB9.c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ"


def test_defaults_are_the_embedded_local_setup() -> None:
    config = MemoryConfig()
    assert config.database_url.startswith("file:")
    assert config.database_url.endswith(".episodic-memory/memory.db")
    assert config.cache.max_episodes_cache == 1000
    assert config.learner.max_in_flight == 10
    assert config.ray.placement == "hosted"


def test_turso_variables_select_the_remote_store() -> None:
    config = MemoryConfig.from_env(
        {"TURSO_DATABASE_URL": "libsql://db.example.turso.io", "TURSO_AUTH_TOKEN": TOKEN}
    )
    assert config.database_url == "libsql://db.example.turso.io"
    assert config.storage.auth_token is not None
    assert config.storage.auth_token.get_secret_value() == TOKEN


def test_the_auth_token_never_appears_in_repr_str_or_json() -> None:
    config = MemoryConfig.from_env({"TURSO_AUTH_TOKEN": TOKEN})
    for rendering in (repr(config), str(config), config.model_dump_json(), str(config.storage)):
        assert TOKEN not in rendering


def test_prefixed_variables_and_explicit_overrides_layer_in_order(tmp_path: Path) -> None:
    env = {
        "EPISODIC_MEMORY_DATA_DIR": str(tmp_path / "from-env"),
        "EPISODIC_MEMORY_PLACEMENT": "dedicated",
        "EPISODIC_MEMORY_EMBEDDER": "none",
        "MAX_EPISODES_CACHE": "5",
    }
    config = MemoryConfig.from_env(env, data_dir=tmp_path / "explicit")
    assert config.data_dir == tmp_path / "explicit"
    assert config.ray.placement == "dedicated"
    assert config.index.embedder == "none"
    assert config.cache.max_episodes_cache == 5


def test_unknown_config_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="flush_intervl_s"):
        MemoryConfig.model_validate({"flush": {"flush_intervl_s": 1}})
