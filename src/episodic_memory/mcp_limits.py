"""Per-client token buckets for the MCP server, sized by ``config.rate_limit``.

An MCP server is an edge: whatever drives it (an LLM in a loop, a script over HTTP) can call
far faster than an agent works. Each client gets two buckets: ``episodes_*`` for episode-level
calls (start, complete, retrieve, get, list, suggest) and ``steps_*`` for logged steps, one
token per step. A refused call costs nothing and says when to retry. The buckets themselves
live in ``rate_limit`` (shared with the memory's own API edge).
"""

from __future__ import annotations

from episodic_memory.rate_limit import Bucket, ClientRateLimiter, TokenBucket

__all__ = ["Bucket", "ClientRateLimiter", "TokenBucket"]
