"""Per-client token buckets for the MCP server, sized by ``config.rate_limit``.

An MCP server is an edge: whatever drives it (an LLM in a loop, a script over HTTP) can call
far faster than an agent works. Each client gets two buckets: ``episodes_*`` for episode-level
calls (start, complete, retrieve, get, list, suggest) and ``steps_*`` for logged steps, one
token per step. A refused call costs nothing and says when to retry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from episodic_memory.config import RateLimitConfig
from episodic_memory.errors import RateLimitExceeded, ValidationError

__all__ = ["ClientRateLimiter", "TokenBucket"]

Bucket = Literal["episodes", "steps"]
_WHAT: dict[Bucket, str] = {"episodes": "episode-level calls", "steps": "steps"}


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; a call takes ``cost`` tokens or none."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, cost: int, now: float) -> float:
        """Take ``cost`` tokens: 0.0 when granted, else the seconds until they would be."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate_per_s


class ClientRateLimiter:
    """Both buckets for each client key; the least recently seen keys are dropped past
    ``max_clients``, so many short HTTP sessions cannot grow it without bound."""

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self._config = config
        self._clock = clock
        self._max_clients = max_clients
        self._clients: OrderedDict[str, dict[Bucket, TokenBucket]] = OrderedDict()

    def _buckets(self, key: str, now: float) -> dict[Bucket, TokenBucket]:
        buckets = self._clients.get(key)
        if buckets is None:
            c = self._config
            buckets = {
                "episodes": TokenBucket(c.episodes_per_s, c.episodes_burst, now),
                "steps": TokenBucket(c.steps_per_s, c.steps_burst, now),
            }
            self._clients[key] = buckets
            while len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(key)
        return buckets

    def admit(self, key: str, bucket: Bucket, cost: int = 1) -> None:
        """Take ``cost`` tokens from the client's bucket or raise ``RateLimitExceeded``."""
        now = self._clock()
        chosen = self._buckets(key, now)[bucket]
        if cost > chosen.burst:  # could never be granted: say so instead of "retry later"
            raise ValidationError(
                "steps",
                f"has {cost} steps, more than the rate limit's burst of {chosen.burst}",
                f"send at most {chosen.burst} steps per call",
            )
        wait_s = chosen.take(cost, now)
        if wait_s > 0:
            raise RateLimitExceeded(key, wait_s, _WHAT[bucket])
