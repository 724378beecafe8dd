"""Tokenization is the one shared vocabulary: inflections meet, noise and identifiers drop out."""

from __future__ import annotations

import pytest

from episodic_memory.core.text import STOPWORDS, bigrams, stem, terms, tokenize


def test_tokens_are_lowercase_words_without_stopwords() -> None:
    assert tokenize("Cancel THE order, and refund it to the card!") == [
        "cancel",
        "order",
        "refund",
        "card",
    ]
    assert not set(tokenize(" ".join(sorted(STOPWORDS))))


@pytest.mark.parametrize(
    "forms",
    [
        ("cancel", "cancelled", "cancelling", "cancels", "cancellation"),
        ("exchange", "exchanged", "exchanging", "exchanges"),
        ("modify", "modified", "modifies", "modification"),
        ("reserve", "reserved", "reservation"),
        ("flight", "flights"),
        ("address", "addresses"),
    ],
)
def test_inflections_of_a_word_share_one_stem(forms: tuple[str, ...]) -> None:
    assert len({stem(form) for form in forms}) == 1


def test_short_words_and_stems_are_left_alone() -> None:
    for word in ("bus", "red", "is", "status", "class"):
        assert stem(word) == word
    for word in ("cancelled", "flights", "modification", "exchanging"):
        assert stem(stem(word)) == stem(word)


def test_identifiers_are_dropped_but_short_numbers_and_names_survive() -> None:
    tokens = tokenize("Order #W2378156, zip 19122, card credit_card_4190576; within 24 hours; utf8")
    assert tokens == ["order", "zip", "card", "credit", "card", "within", "24", "hour", "utf8"]


def test_camel_and_snake_case_split_into_words() -> None:
    assert tokenize("parseJSON HTTPServer get_order_details") == [
        "pars",
        "json",
        "http",
        "server",
        "get",
        "order",
        "detail",
    ]


def test_terms_are_unigrams_then_adjacent_bigrams() -> None:
    assert bigrams(["a1", "b2", "c3"]) == ["a1 b2", "b2 c3"]
    assert terms("cancel pending order") == [
        "cancel",
        "pend",
        "order",
        "cancel pend",
        "pend order",
    ]
    assert terms("") == []
