"""Past its full-scan size, keyword search keeps a query's rarest words (all three backends)."""

from __future__ import annotations

from store_helpers import make_episode, step, store_completed

from episodic_memory.storage.keyword_plan import KeywordPlanner, fts_tokens
from episodic_memory.storage.libsql_store import SqlEpisodeStore


async def _fill(store: SqlEpisodeStore) -> dict[str, str]:
    """Six 'deploy' episodes; one also mentions 'kubectl', one 'kubectl' and 'postgres'."""
    ids: dict[str, str] = {}
    texts = ["deploy the api"] * 4 + ["deploy with kubectl", "deploy kubectl postgres"]
    for n, text in enumerate(texts):
        episode = await store_completed(store, make_episode(text, completed=True), [step(1)])
        ids[f"{n}:{text}"] = episode.episode_id
    return ids


async def test_a_small_memory_searches_every_word(store: SqlEpisodeStore) -> None:
    ids = await _fill(store)
    hits = await store.keyword_search("deploy kubectl")
    assert len(hits) == 6  # 'deploy' alone matches every episode
    assert hits[0].episode_id in {ids["4:deploy with kubectl"], ids["5:deploy kubectl postgres"]}


async def test_a_large_memory_keeps_only_the_rarest_words(store: SqlEpisodeStore) -> None:
    ids = await _fill(store)
    store.keywords = KeywordPlanner(full_scan_max_episodes=3, max_matched_rows=3)
    hits = await store.keyword_search("deploy kubectl postgres")
    # 'postgres' (1 doc) and 'kubectl' (2) fit in 3 matching rows; 'deploy' (6) does not.
    assert {h.episode_id for h in hits} == {
        ids["4:deploy with kubectl"],
        ids["5:deploy kubectl postgres"],
    }
    assert hits[0].episode_id == ids["5:deploy kubectl postgres"]
    assert await store.keyword_search("deploy") == []  # only a common word: no keyword hits
    keyword, _ = await store.candidate_ids("deploy postgres", None, None, None, 10)
    assert [h.episode_id for h in keyword] == [ids["5:deploy kubectl postgres"]]


async def test_a_large_memory_reads_the_rows_of_only_its_best_ranked_hits(
    store: SqlEpisodeStore,
) -> None:
    for _ in range(3):  # short descriptions: BM25 ranks these first
        await store_completed(
            store, make_episode("kubectl rollout", domain="ops", completed=True), [step(1)]
        )
    wordy = "kubectl run with a long description that says a great deal about other things"
    web = await store_completed(store, make_episode(wordy, domain="web", completed=True), [step(1)])
    assert [h.episode_id for h in await store.keyword_search("kubectl", domain="web")] == [
        web.episode_id
    ]
    store.keywords = KeywordPlanner(full_scan_max_episodes=3, rank_depth=3)
    # limit 1 × depth 3: only the three best hits (all 'ops') have their rows read.
    assert await store.keyword_search("kubectl", domain="web", limit=1) == []
    hits = await store.keyword_search("kubectl", domain="web", limit=2)  # depth 6 reaches it
    assert [h.episode_id for h in hits] == [web.episode_id]
    keyword, _ = await store.candidate_ids("kubectl", "ops", None, None, 2)
    assert len(keyword) == 2


async def test_document_counts_are_cached_until_the_memory_grows(store: SqlEpisodeStore) -> None:
    await _fill(store)
    planner = KeywordPlanner(
        full_scan_max_episodes=3, max_matched_rows=3, size_ttl_s=0.0, refresh=0.5
    )
    store.keywords = planner
    assert await planner.match("postgres", store.executor) == '"postgres"'
    for _ in range(2):  # two more 'postgres' episodes: 3 docs, still cached as 1 (< 50% growth)
        await store_completed(store, make_episode("postgres backup", completed=True), [step(1)])
    # Cached: postgres 1 + kubectl 2 fit in 3 rows. Recounted, postgres (3) no longer fits.
    assert await planner.match("postgres kubectl", store.executor) == '"postgres" OR "kubectl"'
    planner.refresh = 0.0  # any growth makes cached counts stale
    assert await planner.match("postgres kubectl", store.executor) == '"kubectl"'


def test_tokens_are_folded_the_way_the_index_stores_them() -> None:
    assert fts_tokens("Réparer find_user_ID and the CAFÉ") == [
        "reparer",
        "find",
        "user",
        "id",
        "cafe",
    ]
