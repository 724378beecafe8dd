"""Which words a full-text query may use, so keyword search stays bounded at any size.

FTS5 ranks with BM25 over every row that matches any query word, and counts each word's
documents for its IDF. Both grow with the memory: measured on a million realistic episodes,
one OR-query of a task's words took ~1 s, and even three mid-frequency words (~75k matching
rows) 125 ms. Common words also say the least. So past ``full_scan_max_episodes`` a query
keeps only its rarest words, as many as fit together in ``max_matched_rows`` matching
documents (at most ``max_terms``; BM25 costs ~4 µs per matching row at 1M, so 2k rows stay
under ~10 ms); when even the rarest word is common, the keyword source stays silent and the
vector, learned and metadata sources carry the query. Below the
threshold every word is used, exactly as before (small memories: a full scan is cheap and
the quality benchmark runs there).

Past the threshold the query also ranks on the full-text index alone and reads the episode
rows of only its ``rank_depth × limit`` best hits: the join that checks status and domain is
a random read per row, which cold (an 8 GB database, a query's rows scattered through it)
made 2k matched rows cost up to ~60 ms instead of ~5.

Document counts are probed with a bounded match (``LIMIT max_matched_rows + 1``): only
"fits or not" matters, and an exact count costs as much as reading the word's whole posting
list (fts5vocab: 80 ms for a word in every episode at 1M; the probe stays under ~1 ms).
Counts are cached per word and redone once the memory has grown by ``refresh``.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

from episodic_memory.core.text import STOPWORDS
from episodic_memory.storage.executors import Executor
from episodic_memory.storage.sql import (
    MAX_FTS_TERMS,
    Statement,
    fts_any_of,
    fts_match_expression,
    keyword_search,
)

__all__ = ["KeywordPlanner", "fts_tokens"]

_TOKEN = re.compile(r"[^\W_]+")  # FTS5 unicode61: letters and digits; '_' separates
_SIZE = ("SELECT coalesce(max(seq), 0) FROM episodes", ())
_DOC_COUNT = "SELECT count(*) FROM (SELECT 1 FROM episodes_fts WHERE episodes_fts MATCH ? LIMIT ?)"


def _fold(word: str) -> str:
    """The form unicode61 (remove_diacritics 2) stores: lower case, no combining marks."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def fts_tokens(text: str) -> list[str]:
    """Distinct indexed tokens of ``text``, stopwords dropped, in order of appearance."""
    tokens = dict.fromkeys(_fold(t) for t in _TOKEN.findall(unicodedata.normalize("NFKC", text)))
    return [t for t in tokens if t and t not in STOPWORDS]


@dataclass
class _Count:
    docs: int
    at_size: int


class KeywordPlanner:
    """Builds the FTS5 match expression for a query; holds the per-word document counts."""

    def __init__(
        self,
        *,
        full_scan_max_episodes: int = 20_000,
        max_matched_rows: int = 2_000,
        max_terms: int = 8,
        rank_depth: int = 4,
        refresh: float = 0.2,
        cache_size: int = 100_000,
        size_ttl_s: float = 10.0,
    ) -> None:
        self.full_scan_max_episodes = full_scan_max_episodes
        self.max_matched_rows = max_matched_rows
        self.max_terms = max_terms
        self.rank_depth = rank_depth
        self.refresh = refresh
        self.cache_size = cache_size
        self.size_ttl_s = size_ttl_s
        self._counts: OrderedDict[str, _Count] = OrderedDict()
        self._size = 0
        self._size_at = -float("inf")

    async def size(self, executor: Executor) -> int:
        """Episodes ever stored (max seq), re-read at most every ``size_ttl_s``."""
        now = time.monotonic()
        if now - self._size_at > self.size_ttl_s:
            rows = (await executor.execute(*_SIZE)).rows
            self._size, self._size_at = int(str(rows[0][0])), now
        return self._size

    async def search(
        self, text: str, domain: str | None, limit: int, executor: Executor
    ) -> Statement | None:
        """The keyword search for ``text`` (``sql.keyword_search``); ``None`` for no words."""
        match = await self.match(text, executor)
        if match is None:
            return None
        bounded = self._size > self.full_scan_max_episodes
        depth = self.rank_depth * limit if bounded else None
        return keyword_search(text, domain, limit, match, ranked_first=depth)

    async def match(self, text: str, executor: Executor) -> str | None:
        """The match expression for ``text``; ``None`` when no word may be searched."""
        if await self.size(executor) <= self.full_scan_max_episodes:
            return fts_match_expression(text)
        tokens = fts_tokens(text)[:MAX_FTS_TERMS]
        counts = await self._doc_counts(tokens, executor)
        chosen: list[str] = []
        matched = 0
        for term in sorted((t for t in tokens if counts[t] > 0), key=lambda t: (counts[t], t)):
            if len(chosen) == self.max_terms or matched + counts[term] > self.max_matched_rows:
                break
            chosen.append(term)
            matched += counts[term]
        return fts_any_of(chosen) if chosen else None

    async def _doc_counts(self, tokens: list[str], executor: Executor) -> dict[str, int]:
        size = self._size
        stale = [
            t
            for t in tokens
            if (c := self._counts.get(t)) is None or size > c.at_size * (1 + self.refresh)
        ]
        if stale:
            cap = self.max_matched_rows + 1  # "more than fits" is all a larger count says
            statements: list[Statement] = [(_DOC_COUNT, (fts_any_of([t]), cap)) for t in stale]
            results = await executor.batch(statements, read_only=True)
            for term, result in zip(stale, results, strict=True):
                docs = int(str(result.rows[0][0])) if result.rows else 0
                self._counts[term] = _Count(docs, size)
        found: dict[str, int] = {}
        for term in tokens:
            self._counts.move_to_end(term)
            found[term] = self._counts[term].docs
        while len(self._counts) > self.cache_size:
            self._counts.popitem(last=False)
        return found
