"""The shared token buckets (``rate_limit``) on a clock the test moves."""

from __future__ import annotations

import pytest

from episodic_memory.config import RateLimitConfig
from episodic_memory.errors import RateLimitExceeded, ValidationError
from episodic_memory.rate_limit import ANONYMOUS, Bucket, RateLimiter, TokenBucket

CONFIG = RateLimitConfig(
    enabled=True, episodes_per_s=2.0, episodes_burst=2, steps_per_s=10.0, steps_burst=5
)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_each_agent_key_has_its_own_buckets() -> None:
    limiter = RateLimiter(CONFIG, clock=Clock())
    limiter.admit("agent-a", "episodes")
    limiter.admit("agent-a", "episodes")
    with pytest.raises(RateLimitExceeded) as refused:
        limiter.admit("agent-a", "episodes")
    assert refused.value.key == "agent-a"
    assert refused.value.retry_after_s == pytest.approx(0.5)
    limiter.admit("agent-b", "episodes")  # another agent is untouched


def test_a_refused_call_takes_no_tokens_and_the_wait_it_names_is_enough() -> None:
    clock = Clock()
    limiter = RateLimiter(CONFIG, clock=clock)
    limiter.admit("a", "steps", 4)
    with pytest.raises(RateLimitExceeded) as refused:
        limiter.admit("a", "steps", 3)
    assert refused.value.retry_after_s == pytest.approx(0.2)
    limiter.admit("a", "steps", 1)  # the refused 3 were not taken: 1 token was still there
    clock.now += 0.5
    limiter.admit("a", "steps", 3)


def test_refusals_are_counted_per_bucket_and_reported_to_the_hook() -> None:
    seen: list[Bucket] = []
    limiter = RateLimiter(CONFIG, clock=Clock(), on_reject=seen.append)
    for _ in range(2):
        limiter.admit("a", "episodes")
    for _ in range(3):
        with pytest.raises(RateLimitExceeded):
            limiter.admit("a", "episodes")
    limiter.admit("a", "steps", 5)
    with pytest.raises(RateLimitExceeded):
        limiter.admit("a", "steps")
    assert seen == ["episodes", "episodes", "episodes", "steps"]
    assert limiter.stats() == {"keys": 1, "rejected_episodes": 3, "rejected_steps": 1}


def test_more_steps_than_the_burst_is_a_validation_error_not_a_retry() -> None:
    limiter = RateLimiter(CONFIG, clock=Clock())
    with pytest.raises(ValidationError) as refused:
        limiter.admit("a", "steps", 6)
    assert refused.value.field == "steps"
    assert limiter.stats()["rejected_steps"] == 0


def test_steps_are_charged_to_the_agent_that_started_the_episode() -> None:
    limiter = RateLimiter(CONFIG, clock=Clock())
    limiter.remember("ep-1", "agent-a")
    assert limiter.key_for("ep-1") == "agent-a"
    assert limiter.key_for("ep-unknown") == ANONYMOUS
    limiter.forget("ep-1")
    assert limiter.key_for("ep-1") == ANONYMOUS


def test_the_least_recently_seen_keys_are_dropped_past_the_bound() -> None:
    limiter = RateLimiter(CONFIG, clock=Clock(), max_keys=2)
    for key in ("a", "b", "a", "c"):
        limiter.admit(key, "episodes")
    assert limiter.stats()["keys"] == 2
    with pytest.raises(RateLimitExceeded):  # "a" was kept (recently seen): its bucket is empty
        limiter.admit("a", "episodes")


def test_a_clock_that_steps_backwards_never_mints_tokens() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now=10.0)
    assert bucket.take(1, now=10.0) == 0.0
    assert bucket.take(1, now=5.0) == pytest.approx(1.0)
    assert bucket.take(1, now=10.5) == pytest.approx(0.5)
