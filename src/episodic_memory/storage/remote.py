"""Remote libSQL (sqld, Turso) through libsql-client, with retries and typed errors.

Every call is retried on transient failures (connection refused or reset, timeouts, HTTP 5xx,
busy database) and on rate-limit / quota refusals, with exponential backoff and full jitter
(``uniform(0, min(max_delay, base * 2**attempt))``), waiting at least ``Retry-After`` when the
server sends one. Our writes are idempotent (upserts, ``INSERT OR IGNORE``), so replaying a
batch whose answer was lost is harmless. When retries run out: ``QuotaExceeded`` for quota and
rate limits, ``StoreUnavailable`` for transport failures, ``StorageError`` for anything else
(SQL errors and auth failures are not retried). The auth token never appears in a message, and
library exceptions are not chained (some carry request headers).
"""

from __future__ import annotations

import asyncio
import random
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
import libsql_client

from episodic_memory.errors import ConfigurationError, QuotaExceeded, StorageError, StoreUnavailable
from episodic_memory.storage.executors import Result
from episodic_memory.storage.sql import Params, Statement

__all__ = ["REMOTE_SCHEMES", "Failure", "LibsqlExecutor", "RetryPolicy", "classify", "safe_url"]

T = TypeVar("T")
REMOTE_SCHEMES = frozenset({"libsql", "ws", "wss", "http", "https"})
DEFAULT_REQUEST_TIMEOUT_S = 30.0
MAX_RETRY_AFTER_S = 60.0

Kind = Literal["transient", "throttled", "quota", "fatal"]
_HTTP_STATUS = re.compile(r"HTTP status (\d{3})")
_TRANSIENT_CODES = frozenset(
    {"HRANA_WEBSOCKET_ERROR", "STREAM_EXPIRED", "SQLITE_BUSY", "SQLITE_LOCKED", "SERVER_ERROR"}
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Full jitter; never shorter than the server's ``Retry-After`` (capped at 60 s)."""
        delay = random.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2**attempt))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        return delay


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Kind
    detail: str
    retry_after_s: float | None = None


def _by_status(status: int, detail: str, retry_after_s: float | None = None) -> Failure:
    if status == 429:
        return Failure("throttled", detail, retry_after_s)
    if status in (408, 425) or status >= 500:
        return Failure("transient", detail, retry_after_s)
    return Failure("fatal", detail)


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def classify(exc: BaseException) -> Failure:
    """Sort a library exception into what the retry loop does with it."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):  # incl. WebSocket handshake refusals
        return _by_status(exc.status, detail, _retry_after(exc.headers))
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):  # retrying cannot fix TLS
        return Failure("fatal", detail)
    if isinstance(exc, TimeoutError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return Failure("transient", detail)
    if isinstance(exc, libsql_client.LibsqlError):
        code = str(getattr(exc, "code", "") or "")
        text = str(exc).lower()
        if code == "BLOCKED" or "quota" in text:
            return Failure("quota", detail)
        if "rate limit" in text or "too many requests" in text:
            return Failure("throttled", detail)
        if match := _HTTP_STATUS.search(str(exc)):
            return _by_status(int(match[1]), detail)
        if code in _TRANSIENT_CODES:
            return Failure("transient", detail)
        return Failure("fatal", detail)
    if isinstance(exc, ConnectionError):
        return Failure("transient", detail)
    return Failure("fatal", detail)


def safe_url(url: str) -> str:
    """The URL without user info or query (where tokens hide), for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class LibsqlExecutor:
    """libsql-client (ws/wss/http/https/libsql) behind the ``Executor`` protocol."""

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        retry: RetryPolicy | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in REMOTE_SCHEMES:
            raise ConfigurationError(
                f"storage.database_url: scheme {scheme!r} is not a libSQL URL; use one of "
                f"{sorted(REMOTE_SCHEMES)} or file:"
            )
        self._url = url
        self._label = safe_url(url)
        self._token = auth_token
        self._retry = retry or RetryPolicy()
        self._timeout_s = request_timeout_s
        self._client: Any = None  # created inside the running loop (its sessions need one)
        self._closed = False

    def _scrub(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "[REDACTED:token]")
        return text.replace(self._url, self._label)

    def _ensure_client(self) -> Any:
        if self._closed:
            raise StorageError("the store is closed: open a new one with open_store(config)")
        if self._client is None:
            try:
                self._client = libsql_client.create_client(self._url, auth_token=self._token)
            except libsql_client.LibsqlError as exc:
                raise ConfigurationError(
                    f"storage.database_url {self._label!r} is not usable: {self._scrub(str(exc))}"
                ) from None
        return self._client

    async def _with_retries(self, what: str, call: Callable[[Any], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            client = self._ensure_client()
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await call(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # translated below; nothing foreign escapes
                failure = classify(exc)
            if failure.kind == "fatal" or attempt >= self._retry.max_retries:
                raise self._give_up(failure, what, attempt + 1) from None
            await asyncio.sleep(self._retry.delay_s(attempt, failure.retry_after_s))
            attempt += 1

    def _give_up(self, failure: Failure, what: str, attempts: int) -> StorageError:
        detail = self._scrub(failure.detail)
        where = f"{what} on {self._label}"
        if failure.kind == "quota":
            return QuotaExceeded(
                f"{where} refused for quota after {attempts} attempt(s): {detail}; "
                "raise the plan's limits or reduce writes"
            )
        if failure.kind == "throttled":
            return QuotaExceeded(
                f"{where} rate limited after {attempts} attempt(s): {detail}; "
                "slow down or raise storage.max_retries / retry_max_delay_s"
            )
        if failure.kind == "transient":
            return StoreUnavailable(
                f"{where} failed after {attempts} attempt(s): {detail}; check that the server "
                "is running and reachable"
            )
        return StorageError(f"{where} failed: {detail}")

    async def execute(self, sql: str, params: Params = ()) -> Result:
        async def call(client: Any) -> Result:
            result = await client.execute(sql, params)
            return Result([row.astuple() for row in result.rows], result.rows_affected)

        return await self._with_retries("execute", call)

    async def batch(
        self, statements: Sequence[Statement], *, read_only: bool = False
    ) -> list[Result]:
        """One ``batch()`` = one transaction on the server (BEGIN ... COMMIT, else ROLLBACK)."""
        stmts = [(sql, params) for sql, params in statements]
        if not stmts:
            return []

        async def call(client: Any) -> list[Result]:
            results = await client.batch(stmts)
            return [Result([r.astuple() for r in rs.rows], rs.rows_affected) for rs in results]

        return await self._with_retries(f"batch of {len(stmts)}", call)

    async def close(self) -> None:
        """Close the client's sessions (an unclosed client can hang interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception as exc:
                raise StorageError(
                    f"closing {self._label} failed: {self._scrub(str(exc))}"
                ) from None
