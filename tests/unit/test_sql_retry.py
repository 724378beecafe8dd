"""Remote failure classification, backoff bounds, and which executor a URL gets."""

from __future__ import annotations

import aiohttp
import libsql_client
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr
from yarl import URL

from episodic_memory.config import MemoryConfig, StorageConfig
from episodic_memory.errors import ConfigurationError
from episodic_memory.storage.executors import SqliteExecutor, path_from_file_url
from episodic_memory.storage.libsql_store import make_executor
from episodic_memory.storage.remote import LibsqlExecutor, RetryPolicy, classify, safe_url


def response_error(status: int, retry_after: str | None = None) -> aiohttp.ClientResponseError:
    url = URL("http://127.0.0.1:1/v1/execute")
    info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)
    headers = CIMultiDict({"Retry-After": retry_after} if retry_after is not None else {})
    return aiohttp.ClientResponseError(info, (), status=status, headers=headers)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiohttp.ServerDisconnectedError(), "transient"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "transient"),
        (TimeoutError(), "transient"),
        (ConnectionRefusedError(), "transient"),
        (response_error(503), "transient"),
        (response_error(429), "throttled"),
        (response_error(401), "fatal"),
        (libsql_client.LibsqlError("Server returned HTTP status 500", "SERVER_ERROR"), "transient"),
        (libsql_client.LibsqlError("Server returned HTTP status 400", "SERVER_ERROR"), "fatal"),
        (libsql_client.LibsqlError("Server returned HTTP status 429", "SERVER_ERROR"), "throttled"),
        (libsql_client.LibsqlError("writes are blocked", "BLOCKED"), "quota"),
        (libsql_client.LibsqlError("database is over its storage quota", "X"), "quota"),
        (libsql_client.LibsqlError("the stream has expired", "STREAM_EXPIRED"), "transient"),
        (libsql_client.LibsqlError("database is locked", "SQLITE_BUSY"), "transient"),
        (libsql_client.LibsqlError("syntax error", "SQL_PARSE_ERROR"), "fatal"),
        (libsql_client.LibsqlError("UNIQUE constraint failed", "SQLITE_CONSTRAINT"), "fatal"),
        (ValueError("bug"), "fatal"),
    ],
)
def test_failures_are_sorted_into_what_the_retry_loop_does(exc: BaseException, kind: str) -> None:
    assert classify(exc).kind == kind


def test_a_retry_after_header_is_kept() -> None:
    assert classify(response_error(429, "3")).retry_after_s == 3.0
    assert classify(response_error(429, "soon")).retry_after_s is None


def test_backoff_is_full_jitter_capped_and_never_shorter_than_retry_after() -> None:
    policy = RetryPolicy(max_retries=9, base_delay_s=0.1, max_delay_s=1.0)
    for attempt in range(10):
        for _ in range(50):
            assert 0.0 <= policy.delay_s(attempt) <= min(1.0, 0.1 * 2**attempt)
    assert policy.delay_s(0, retry_after_s=5.0) >= 5.0
    assert policy.delay_s(0, retry_after_s=10_000.0) <= 60.0


def test_urls_in_messages_lose_their_credentials() -> None:
    assert safe_url("libsql://user:pw@db.example.io:8080/x?authToken=abc&tls=1") == (
        "libsql://db.example.io:8080/x"
    )
    assert safe_url("ws://[::1]:8080?authToken=abc") == "ws://[::1]:8080"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:/data/memory.db", "/data/memory.db"),
        ("file:///data/memory.db", "/data/memory.db"),
        ("file://localhost/data/memory.db", "/data/memory.db"),
        ("file:relative/memory.db", "relative/memory.db"),
        ("file:/data/with space%20and#hash.db", "/data/with space%20and#hash.db"),
        ("file::memory:", ":memory:"),
    ],
)
def test_file_urls_map_to_plain_paths(url: str, path: str) -> None:
    assert path_from_file_url(url) == path


@pytest.mark.parametrize("url", ["file://otherhost/x.db", "file:", "file:   "])
def test_unusable_file_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="database_url"):
        path_from_file_url(url)


def config_for(url: str | None, token: str | None = None) -> MemoryConfig:
    return MemoryConfig(
        storage=StorageConfig(database_url=url, auth_token=SecretStr(token) if token else None)
    )


def test_the_default_config_gets_the_embedded_file_executor() -> None:
    executor = make_executor(config_for(None))
    assert isinstance(executor, SqliteExecutor)
    assert executor.path.endswith(".episodic-memory/memory.db")


@pytest.mark.parametrize(
    "url",
    ["libsql://db.turso.io", "wss://db.turso.io", "ws://127.0.0.1:1", "https://x", "http://x:1"],
)
def test_remote_urls_get_the_libsql_client_executor(url: str) -> None:
    assert isinstance(make_executor(config_for(url, token="t")), LibsqlExecutor)


@pytest.mark.parametrize("url", ["postgres://x", "mysql://y", "/just/a/path"])
def test_other_urls_are_configuration_errors_that_list_the_choices(url: str) -> None:
    with pytest.raises(ConfigurationError, match="libsql://"):
        make_executor(config_for(url))
