"""cluster.yaml must pass the Ray cluster launcher's own validation, offline.

Uses Ray's schema (``ray/autoscaler/ray-schema.json`` inside the wheel) through the launcher's
``prepare_config`` + ``validate_config``: the raw schema alone misses the semantic checks
(head type present, worker counts). Private API, hence the exact Ray pin in pyproject.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.exceptions import ValidationError as SchemaError
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "cluster.yaml", ROOT / "deploy" / "cluster-onprem.yaml"]


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_config_passes_the_launchers_validation(path: Path) -> None:
    validate_config(prepare_config(copy.deepcopy(_load(path))))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_config_installs_the_package_and_serves_the_memory_on_the_head(
    path: Path,
) -> None:
    config = _load(path)
    assert any("episodic-memory" in cmd for cmd in config["setup_commands"])
    head_commands = " ".join(config["head_start_ray_commands"])
    assert "episodic-memory serve" in head_commands
    assert "episodic_memory_storage" in head_commands  # the resource that pins storage


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_config_holds_no_secrets(path: Path) -> None:
    text = path.read_text()
    assert "TURSO_AUTH_TOKEN=" not in text.replace("TURSO_AUTH_TOKEN=<token>", "")
    assert "eyJ" not in text  # no JWT-shaped token pasted in


def test_a_misspelled_top_level_key_is_rejected() -> None:
    config = _load(CONFIGS[0])
    config["max_wrokers"] = 3
    with pytest.raises(SchemaError, match="max_wrokers"):
        validate_config(prepare_config(config))


def test_an_unknown_head_node_type_is_rejected() -> None:
    config = _load(CONFIGS[0])
    config["head_node_type"] = "leader"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(config))
