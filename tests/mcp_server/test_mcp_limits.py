"""Per-client token buckets of the MCP server, on a clock the test moves."""

from __future__ import annotations

import pytest

from episodic_memory.config import RateLimitConfig
from episodic_memory.errors import RateLimitExceeded, ValidationError
from episodic_memory.mcp_limits import ClientRateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, max_clients: int = 10_000) -> ClientRateLimiter:
    config = RateLimitConfig(
        enabled=True, episodes_per_s=2.0, episodes_burst=2, steps_per_s=10.0, steps_burst=5
    )
    return ClientRateLimiter(config, clock=clock, max_clients=max_clients)


def test_a_bucket_grants_its_burst_then_says_how_long_until_the_next_token() -> None:
    bucket = TokenBucket(rate_per_s=4.0, burst=2, now=0.0)
    assert bucket.take(1, now=0.0) == 0.0
    assert bucket.take(1, now=0.0) == 0.0
    assert bucket.take(1, now=0.0) == pytest.approx(0.25)
    assert bucket.take(1, now=0.25) == 0.0


def test_a_bucket_refills_no_further_than_its_burst() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3, now=0.0)
    assert bucket.take(3, now=1_000.0) == 0.0
    assert bucket.take(1, now=1_000.0) == pytest.approx(1.0)


def test_clients_have_separate_buckets_and_a_refusal_carries_the_wait() -> None:
    clock = Clock()
    limits = limiter(clock)
    limits.admit("a", "episodes")
    limits.admit("a", "episodes")
    with pytest.raises(RateLimitExceeded) as refused:
        limits.admit("a", "episodes")
    assert refused.value.key == "a"
    assert refused.value.retry_after_s == pytest.approx(0.5)
    limits.admit("b", "episodes")  # another client is unaffected
    limits.admit("a", "steps", 5)  # and so is the same client's other bucket
    clock.now += 0.5
    limits.admit("a", "episodes")


def test_a_refused_call_takes_no_tokens() -> None:
    clock = Clock()
    limits = limiter(clock)
    limits.admit("a", "steps", 4)
    with pytest.raises(RateLimitExceeded):
        limits.admit("a", "steps", 2)
    limits.admit("a", "steps", 1)


def test_more_steps_than_the_burst_is_a_validation_error_not_a_retry() -> None:
    limits = limiter(Clock())
    with pytest.raises(ValidationError) as error:
        limits.admit("a", "steps", 6)
    assert error.value.field == "steps"
    assert "at most 5" in error.value.fix


def test_the_least_recently_seen_client_is_forgotten_past_the_cap() -> None:
    clock = Clock()
    limits = limiter(clock, max_clients=2)
    for key in ("a", "b"):
        limits.admit(key, "episodes", 2)
    limits.admit("c", "episodes", 2)  # evicts "a", whose buckets start full again
    limits.admit("a", "episodes", 2)
    with pytest.raises(RateLimitExceeded):
        limits.admit("c", "episodes")
