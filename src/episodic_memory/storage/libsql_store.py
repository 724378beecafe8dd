"""The libSQL episode store: ``EpisodeStore`` over any ``Executor``, and ``open_store``.

SQL is built by ``storage.sql`` and run by an executor: ``file:`` URLs by a persistent stdlib
sqlite3 connection on a worker thread, ``libsql://``, ``ws(s)://`` and ``http(s)://`` by
libsql-client with retries. Writes go in transactions of at most ``write_batch_size`` records
(each chunk is atomic; calls are idempotent, so a retry after a partial failure is safe).
Reads return validated models; a stored row that no longer validates is a ``StorageError``.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TypeVar

import orjson

from episodic_memory.config import MemoryConfig
from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.core.patterns import Heuristic, Pattern, parse_pattern
from episodic_memory.core.ranking import Candidate
from episodic_memory.errors import ConfigurationError, StorageError, ValidationError
from episodic_memory.storage import candidates as candidate_sql
from episodic_memory.storage import sql
from episodic_memory.storage.base import EpisodeQuery, EpisodeStore, KeywordHit, StoredEmbedding
from episodic_memory.storage.executors import Executor, Result, SqliteExecutor, path_from_file_url
from episodic_memory.storage.keyword_plan import KeywordPlanner
from episodic_memory.storage.migrate import apply_migrations
from episodic_memory.storage.remote import REMOTE_SCHEMES, LibsqlExecutor, RetryPolicy
from episodic_memory.storage.sql import Statement, Value

__all__ = ["SqlEpisodeStore", "make_executor", "open_store"]

T = TypeVar("T")
ID_CHUNK = 500  # ids per IN (...) list: far below every server's bound-parameter limit
VERSIONS_PAGE = 5_000  # rows per page when scanning all episodes (keeps responses small)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text(value: Value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _blob(value: Value) -> bytes:
    if not isinstance(value, bytes):
        raise StorageError(f"stored embedding vector is {type(value).__name__}, not a BLOB")
    return value


def _int(value: Value) -> int:
    return int(value) if isinstance(value, int | float) else int(_text(value))


def _load_episode(data: Value, steps: list[Value]) -> Episode:
    raw = orjson.loads(_text(data))
    try:
        raw["steps"] = [orjson.loads(_text(step)) for step in steps]
        return Episode.model_validate(raw)
    except (ValidationError, orjson.JSONDecodeError, TypeError) as exc:
        episode_id = raw.get("episode_id") if isinstance(raw, dict) else None
        raise StorageError(
            f"stored episode {episode_id!r} does not load ({exc}): the row was written by "
            "incompatible code; restore it from a backup or delete it"
        ) from exc


def _load_pattern(data: Value) -> Pattern:
    try:
        return parse_pattern(_text(data))
    except ValidationError as exc:
        raise StorageError(f"stored pattern does not load: {exc}") from exc


class SqlEpisodeStore:
    """``EpisodeStore`` for libSQL / SQLite. Owns its executor: ``close()`` closes it."""

    def __init__(
        self,
        executor: Executor,
        *,
        write_batch_size: int = 500,
        keywords: KeywordPlanner | None = None,
    ) -> None:
        self._executor = executor
        self._batch = write_batch_size
        self.keywords = keywords or KeywordPlanner()

    @property
    def executor(self) -> Executor:
        return self._executor

    async def migrate(self) -> list[int]:
        return await apply_migrations(self._executor)

    async def close(self) -> None:
        await self._executor.close()

    # --- writes -------------------------------------------------------------------------

    async def _write(self, groups: Sequence[list[Statement]]) -> list[Result]:
        """Run statement groups in transactions of at most ``write_batch_size`` groups."""
        results: list[Result] = []
        for chunk in _chunks(groups, self._batch):
            results.extend(await self._executor.batch([s for group in chunk for s in group]))
        return results

    async def put_episodes(self, episodes: Sequence[Episode]) -> None:
        await self._write([sql.upsert_episode(episode) for episode in episodes])

    async def append_steps(self, steps: Sequence[tuple[str, ExecutionStep]]) -> int:
        for index, (_, step) in enumerate(steps):
            if step.step_number is None:
                raise ValidationError(
                    f"steps.{index}.step_number",
                    "is missing",
                    "number every step before appending it (the episode actor does this)",
                )
        results = await self._write([[sql.insert_step(eid, step)] for eid, step in steps])
        return sum(result.rows_affected for result in results)

    async def upsert_patterns(self, patterns: Sequence[Pattern]) -> None:
        await self._write([[sql.upsert_pattern(pattern)] for pattern in patterns])

    async def upsert_heuristics(self, heuristics: Sequence[Heuristic]) -> None:
        await self._write([[sql.upsert_heuristic(heuristic)] for heuristic in heuristics])

    async def put_embeddings(self, embeddings: Sequence[StoredEmbedding]) -> None:
        for index, embedding in enumerate(embeddings):
            if embedding.dim < 1 or len(embedding.vector) != embedding.dim * 4:
                raise ValidationError(
                    f"embeddings.{index}.vector",
                    f"has {len(embedding.vector)} bytes for dim={embedding.dim}",
                    "send dim * 4 bytes of little-endian float32",
                )
        await self._write([[sql.upsert_embedding(embedding)] for embedding in embeddings])

    async def mark_learned(self, episode_ids: Sequence[str]) -> None:
        now = time.time()
        await self._write([[sql.mark_learned(ids, now)] for ids in _chunks(episode_ids, ID_CHUNK)])

    async def commit_learning(
        self,
        patterns: Sequence[Pattern],
        heuristics: Sequence[Heuristic],
        episode_ids: Sequence[str],
    ) -> None:
        """Merged records and learned marks in ONE transaction: a crash leaves both or neither."""
        now = time.time()
        statements = [sql.upsert_pattern(pattern) for pattern in patterns]
        statements += [sql.upsert_heuristic(heuristic) for heuristic in heuristics]
        statements += [sql.mark_learned(ids, now) for ids in _chunks(episode_ids, ID_CHUNK)]
        if statements:
            await self._executor.batch(statements)

    async def learned_episode_ids(self, episode_ids: Sequence[str]) -> set[str]:
        learned: set[str] = set()
        for ids in _chunks(list(dict.fromkeys(episode_ids)), ID_CHUNK):
            result = await self._executor.execute(*sql.learned_among(ids))
            learned.update(str(row[0]) for row in result.rows)
        return learned

    async def delete_episodes(self, episode_ids: Sequence[str]) -> int:
        deleted = 0
        for ids in _chunks(list(dict.fromkeys(episode_ids)), ID_CHUNK):
            results = await self._executor.batch(sql.delete_episodes(ids))
            deleted += results[-1].rows_affected
        return deleted

    # --- reads --------------------------------------------------------------------------

    async def _with_steps(self, headers: list[tuple[Value, ...]]) -> list[Episode]:
        """``(episode_id, data)`` rows → episodes with their steps, in the rows' order."""
        steps: dict[str, list[Value]] = {}
        ids = [_text(row[0]) for row in headers]
        for chunk in _chunks(ids, ID_CHUNK):
            for eid, data in (await self._executor.execute(*sql.select_steps(chunk))).rows:
                steps.setdefault(_text(eid), []).append(data)
        return [_load_episode(row[1], steps.get(_text(row[0]), [])) for row in headers]

    async def get_episodes(self, episode_ids: Sequence[str]) -> list[Episode]:
        """In the order asked, each id once (first mention); unknown ids are skipped."""
        wanted = list(dict.fromkeys(episode_ids))
        found: dict[str, Episode] = {}
        for chunk in _chunks(wanted, ID_CHUNK):
            headers, steps = await self._executor.batch(
                [sql.select_episodes(chunk), sql.select_steps(chunk)], read_only=True
            )
            by_episode: dict[str, list[Value]] = {}
            for eid, data in steps.rows:
                by_episode.setdefault(_text(eid), []).append(data)
            for eid, data in headers.rows:
                key = _text(eid)
                found[key] = _load_episode(data, by_episode.get(key, []))
        return [found[eid] for eid in wanted if eid in found]

    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]:
        rows = (await self._executor.execute(*sql.list_episodes(query))).rows
        if query.with_steps:
            return await self._with_steps(rows)
        return [_load_episode(data, []) for _, data in rows]

    async def candidates(self, episode_ids: Sequence[str]) -> dict[str, Candidate]:
        """Ranking rows of the completed episodes among ``episode_ids``; others are skipped."""
        found: dict[str, Candidate] = {}
        for chunk in _chunks(list(dict.fromkeys(episode_ids)), ID_CHUNK):
            rows = (await self._executor.execute(*candidate_sql.candidate_rows(chunk))).rows
            pending = [_text(row[0]) for row in rows if row[9] is None]
            steps: dict[str, list[tuple[str, bool]]] = {}
            if pending:
                outcomes = await self._executor.execute(*candidate_sql.step_outcomes(pending))
                for eid, tool, success in outcomes.rows:
                    steps.setdefault(_text(eid), []).append((_text(tool), bool(_int(success))))
            found.update(candidate_sql.parse_candidates(rows, steps))
        return found

    async def metadata_candidate_ids(
        self, domain: str | None, task_type: str | None, limit: int
    ) -> list[str]:
        """Latest completed episodes of the task type and/or domain, most specific first."""
        return (await self.candidate_ids(None, None, domain, task_type, limit))[1]

    async def candidate_ids(
        self,
        text: str | None,
        keyword_domain: str | None,
        domain: str | None,
        task_type: str | None,
        limit: int,
    ) -> tuple[list[KeywordHit], list[str]]:
        """Full-text hits for ``text`` and metadata ids, in one read transaction (one hop)."""
        if limit < 1:
            return [], []
        keyword = None
        if text:
            keyword = await self.keywords.search(text, keyword_domain, limit, self._executor)
        statements = [keyword] if keyword is not None else []
        statements += candidate_sql.metadata_candidate_ids(domain, task_type, limit)
        results = await self._executor.batch(statements, read_only=True)
        hits: list[KeywordHit] = []
        if keyword is not None:
            hits = [
                KeywordHit(episode_id=_text(eid), score=float(_text(score)))
                for eid, score in results[0].rows
            ]
            results = results[1:]
        ids = dict.fromkeys(_text(row[0]) for result in results for row in result.rows)
        return hits, list(ids)[:limit]

    async def keyword_search(
        self, text: str, *, domain: str | None = None, limit: int = 50
    ) -> list[KeywordHit]:
        if limit < 1:
            return []
        statement = await self.keywords.search(text, domain, limit, self._executor)
        if statement is None:
            return []
        rows = (await self._executor.execute(*statement)).rows
        return [KeywordHit(episode_id=_text(eid), score=float(_text(s))) for eid, s in rows]

    async def episode_versions(self) -> dict[str, int]:
        versions: dict[str, int] = {}
        after = ""
        while True:
            page = await self._executor.execute(*sql.episode_versions_page(after, VERSIONS_PAGE))
            for eid, revision in page.rows:
                versions[_text(eid)] = _int(revision)
            if len(page.rows) < VERSIONS_PAGE:
                return versions
            after = _text(page.rows[-1][0])

    async def load_patterns(
        self, *, domain: str | None = None, limit: int | None = None
    ) -> list[Pattern]:
        rows = (await self._executor.execute(*sql.load_patterns(domain, limit))).rows
        return [_load_pattern(row[0]) for row in rows]

    async def load_heuristics(
        self, *, domain: str | None = None, limit: int | None = None
    ) -> list[Heuristic]:
        rows = (await self._executor.execute(*sql.load_heuristics(domain, limit))).rows
        try:
            return [Heuristic.model_validate_json(_text(row[0])) for row in rows]
        except ValidationError as exc:
            raise StorageError(f"a stored heuristic does not load: {exc}") from exc

    async def iter_embeddings(
        self, model: str, batch_size: int = 1000
    ) -> AsyncIterator[list[StoredEmbedding]]:
        after = ""
        while True:
            page = await self._executor.execute(
                *sql.select_embeddings_page(model, after, batch_size)
            )
            if page.rows:
                yield [
                    StoredEmbedding(
                        episode_id=_text(eid),
                        model=_text(name),
                        dim=_int(dim),
                        vector=_blob(vector),
                    )
                    for eid, name, dim, vector in page.rows
                ]
            if len(page.rows) < batch_size:
                return
            after = _text(page.rows[-1][0])

    async def iter_episodes(self, batch_size: int = 500) -> AsyncIterator[list[Episode]]:
        after: tuple[float, int] | None = None
        while True:
            page = (await self._executor.execute(*sql.episodes_page(after, batch_size))).rows
            if page:
                yield await self._with_steps([(eid, data) for _, _, eid, data in page])
            if len(page) < batch_size:
                return
            started_at, seq = page[-1][0], page[-1][1]
            after = (float(_text(started_at)), _int(seq))

    async def unlearned_episode_ids(self, limit: int = 1000) -> list[str]:
        rows = (await self._executor.execute(*sql.unlearned_episode_ids(limit))).rows
        return [_text(row[0]) for row in rows]

    async def counts(self) -> dict[str, int]:
        result = await self._executor.execute(*sql.count_rows())
        names = ("episodes", "steps", "patterns", "heuristics", "embeddings")
        return {name: _int(value) for name, value in zip(names, result.rows[0], strict=True)}


def make_executor(config: MemoryConfig) -> Executor:
    """The executor for ``config.database_url``; nothing is connected yet."""
    url = config.database_url
    scheme = urllib.parse.urlsplit(url).scheme if "://" in url else url.partition(":")[0]
    storage = config.storage
    if scheme == "file":
        return SqliteExecutor(path_from_file_url(url), busy_timeout_ms=storage.busy_timeout_ms)
    if scheme in REMOTE_SCHEMES:
        token = storage.auth_token.get_secret_value() if storage.auth_token else None
        retry = RetryPolicy(
            max_retries=storage.max_retries,
            base_delay_s=storage.retry_base_delay_s,
            max_delay_s=storage.retry_max_delay_s,
        )
        return LibsqlExecutor(
            url, auth_token=token, retry=retry, request_timeout_s=storage.request_timeout_s
        )
    raise ConfigurationError(
        f"storage.database_url: unsupported scheme {scheme!r}; use file:/path/to/memory.db, "
        "libsql://, wss://, ws://, https:// or http://"
    )


async def open_store(config: MemoryConfig) -> EpisodeStore:
    """Open the durable store named by the config and bring its schema up to date."""
    store = SqlEpisodeStore(make_executor(config), write_batch_size=config.storage.write_batch_size)
    try:
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store
