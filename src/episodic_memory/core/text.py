"""Shared tokenization for keyword ranking, learning and tool prediction.

Every component that compares texts (TF-IDF ranking, heuristic conditions, the tool predictor)
must see the same terms, or a word that matches in one place silently misses in another. So
there is one ``tokenize``: split camelCase and snake_case, lowercase, drop stopwords and
identifier-like tokens (order numbers, zip codes, hashes never recur across tasks, so they only
add noise), then a light suffix-stripping stemmer so "cancel", "cancelled" and "cancelling"
meet. The stemmer is deliberately conservative (no dictionary, no Porter measure rules): it
only has to map inflections of one word together, not produce real words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

__all__ = ["STOPWORDS", "bigrams", "stem", "terms", "tokenize"]

_STOPWORD_TEXT = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just let me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
also may might must shall us via per etc ll ve re don didn doesn isn wasn aren won
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
"""Common English function words; they carry no signal about which tools a task needs."""

_CAMEL_LOWER_UPPER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_CAMEL_ACRONYM = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")
_MAX_NUMBER_DIGITS = 4  # years, counts, status codes survive; ids, zips, phone numbers do not
_MAX_MIXED_CHARS = 6  # "utf8", "log4j", "ec2" survive; "w2378156" does not
_VOWELS = frozenset("aeiouy")


def _is_identifier(token: str) -> bool:
    """True for tokens that name one object (an order, a zip) rather than a concept."""
    if token.isalpha():
        return False
    if token.isdigit():
        return len(token) > _MAX_NUMBER_DIGITS
    return len(token) > _MAX_MIXED_CHARS  # letters mixed with digits


def _undouble(word: str) -> str:
    """'cancell' → 'cancel', 'stopp' → 'stop': the doubled consonant inflections add."""
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in _VOWELS and word[-1] not in "sz":
        return word[:-1]
    return word


def _has_vowel(word: str) -> bool:
    return any(ch in _VOWELS for ch in word)


def stem(word: str) -> str:
    """Strip one plural and one inflectional suffix from a lowercase word.

    Only applied when a stem of at least three letters with a vowel remains, so short words
    ("bus", "red") are left alone.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ication") and len(word) > 9:
        return word[:-7] + "y"  # "modification" meets "modify"
    for suffix in ("ation", "ing", "ed"):
        if word.endswith(suffix):
            base = word[: -len(suffix)]
            if len(base) >= 3 and _has_vowel(base):
                word = _undouble(base)
                if word.endswith("i"):
                    word = word[:-1] + "y"  # "modified" meets "modify"
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


@lru_cache(maxsize=1 << 16)
def _term(token: str) -> str | None:
    """The term a raw lowercase token becomes, or None if it is dropped (cached: word
    frequencies are Zipfian, so nearly every token is a hit)."""
    if len(token) < 2 or token in STOPWORDS or _is_identifier(token):
        return None
    return stem(token)


def tokenize(text: str) -> list[str]:
    """Lowercase, stopword-free, stemmed word tokens of ``text`` in order (repeats kept)."""
    text = _CAMEL_ACRONYM.sub(" ", _CAMEL_LOWER_UPPER.sub(" ", text))
    return [term for token in _WORD.findall(text.lower()) if (term := _term(token)) is not None]


def bigrams(tokens: Sequence[str]) -> list[str]:
    """Adjacent token pairs joined by a space ("cancel order"): cheap phrase features."""
    return [f"{first} {second}" for first, second in pairwise(tokens)]


def terms(text: str) -> list[str]:
    """Unigrams then bigrams of ``text``: the feature set of the tool predictor."""
    tokens = tokenize(text)
    return tokens + bigrams(tokens)
