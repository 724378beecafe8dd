"""Token buckets per agent/tenant key: the memory's API edge and the MCP server share them.

Each key gets two buckets sized by ``config.rate_limit``: ``episodes_*`` for episode-level
calls (one token per call) and ``steps_*`` for logged steps (one token per step). A refused
call takes no tokens, writes nothing and raises ``RateLimitExceeded`` with ``retry_after_s``;
refusals are counted per bucket (``stats()``) and handed to an optional ``on_reject`` hook
(the memory's Ray backend feeds a ``ray.util.metrics`` counter from it).

Keys are whatever the edge chooses: the MCP server uses the client session, the memory uses
the ``agent_id`` given to ``start_episode`` (and, for ``log_steps``, the agent that started
the episode through the same handle: see ``remember``/``key_for``). The limiter lives in one
process: a Ray fleet's handles each limit their own callers (see docs/durability.md).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from episodic_memory.config import RateLimitConfig
from episodic_memory.errors import RateLimitExceeded, ValidationError

__all__ = [
    "ANONYMOUS",
    "Bucket",
    "ClientRateLimiter",
    "RateLimiter",
    "TokenBucket",
    "ray_rejection_counter",
]

Bucket = Literal["episodes", "steps"]
ANONYMOUS = "-"
"""The key of callers that name no agent."""
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
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate_per_s)
        self._at = max(self._at, now)
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate_per_s


class RateLimiter:
    """Both buckets for each key; the least recently seen keys are dropped past
    ``max_keys``, so many short-lived clients or agents cannot grow it without bound."""

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
        on_reject: Callable[[Bucket], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._max_keys = max_keys
        self._on_reject = on_reject
        self._keys: OrderedDict[str, dict[Bucket, TokenBucket]] = OrderedDict()
        self._owners: OrderedDict[str, str] = OrderedDict()
        self.rejections: dict[Bucket, int] = {"episodes": 0, "steps": 0}

    def _buckets(self, key: str, now: float) -> dict[Bucket, TokenBucket]:
        buckets = self._keys.get(key)
        if buckets is None:
            c = self._config
            buckets = {
                "episodes": TokenBucket(c.episodes_per_s, c.episodes_burst, now),
                "steps": TokenBucket(c.steps_per_s, c.steps_burst, now),
            }
            self._keys[key] = buckets
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return buckets

    def admit(self, key: str, bucket: Bucket, cost: int = 1) -> None:
        """Take ``cost`` tokens from the key's bucket or raise ``RateLimitExceeded``."""
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
            self.rejections[bucket] += 1
            if self._on_reject is not None:
                self._on_reject(bucket)
            raise RateLimitExceeded(key, wait_s, _WHAT[bucket])

    def remember(self, episode_id: str, key: str) -> None:
        """Note which key started an episode, so its steps are charged to that key."""
        self._owners[episode_id] = key
        self._owners.move_to_end(episode_id)
        while len(self._owners) > self._max_keys * 10:
            self._owners.popitem(last=False)

    def key_for(self, episode_id: str) -> str:
        """The key that started ``episode_id`` here, else ``ANONYMOUS``."""
        return self._owners.get(episode_id, ANONYMOUS)

    def forget(self, episode_id: str) -> None:
        self._owners.pop(episode_id, None)

    def stats(self) -> dict[str, int]:
        return {
            "keys": len(self._keys),
            "rejected_episodes": self.rejections["episodes"],
            "rejected_steps": self.rejections["steps"],
        }


class ClientRateLimiter(RateLimiter):
    """The MCP server's limiter: one key per client session (``max_clients`` of them)."""

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        super().__init__(config, clock=clock, max_keys=max_clients)


def ray_rejection_counter(memory_name: str) -> Callable[[Bucket], None]:
    """An ``on_reject`` hook counting refusals in Ray's metrics (created on first use)."""
    counter: list[Any] = []

    def record(bucket: Bucket) -> None:
        if not counter:
            from ray.util import metrics

            made = metrics.Counter(
                "episodic_memory_rate_limited",
                "Calls refused by the rate limit, by bucket.",
                ("memory", "bucket"),
            )
            made.set_default_tags({"memory": memory_name})
            counter.append(made)
        counter[0].inc(1, tags={"bucket": bucket})

    return record
