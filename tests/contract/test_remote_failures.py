"""Remote failures become our typed errors, after bounded retries, without leaking the token.

Most cases use the real sqld (stopped, restarted, or sent bad SQL). sqld cannot be made to
answer 429, 5xx, quota refusals or hang on demand, so those cases put a small aiohttp server
on 127.0.0.1 in front of it: a stand-in for a misbehaving server, not a mock of our code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from store_helpers import make_episode, sqld_command_or_skip, store_config

from episodic_memory.errors import QuotaExceeded, StorageError, StoreUnavailable
from episodic_memory.storage.libsql_store import open_store
from episodic_memory.storage.remote import LibsqlExecutor, RetryPolicy
from support.sqld import SqldServer, free_port, start_sqld

TOKEN = "tok-SECRET-0123456789"
FAST = RetryPolicy(max_retries=2, base_delay_s=0.001, max_delay_s=0.005)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StandIn:
    """An HTTP server on loopback whose answers a test scripts; counts the requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests = 0
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return await self.handler(request)

    async def __aenter__(self) -> StandIn:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


def status(code: int, **kwargs: object) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(status=code, **kwargs)  # type: ignore[arg-type]

    return handler


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_an_unreachable_server_is_store_unavailable_after_the_retries(scheme: str) -> None:
    executor = LibsqlExecutor(f"{scheme}://127.0.0.1:{free_port()}", auth_token=TOKEN, retry=FAST)
    with pytest.raises(StoreUnavailable) as caught:
        await executor.execute("SELECT 1")
    await executor.close()
    assert "after 3 attempt(s)" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


async def test_open_store_on_an_unreachable_server_fails_typed_and_closes_cleanly(
    tmp_path: Path,
) -> None:
    url = f"libsql://127.0.0.1:{free_port()}?tls=0&authToken={TOKEN}"
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(store_config(url, tmp_path))
    assert TOKEN not in str(caught.value)


@pytest.fixture
async def own_sqld(tmp_path: Path) -> AsyncIterator[tuple[SqldServer, Path]]:
    """A private sqld this test may stop and restart (same folder, same port)."""
    command = sqld_command_or_skip()
    workdir = tmp_path / "sqld"
    server = start_sqld(workdir, command)
    try:
        yield server, workdir
    finally:
        server.stop()


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_the_store_recovers_when_the_server_comes_back(
    own_sqld: tuple[SqldServer, Path], scheme: str, tmp_path: Path
) -> None:
    server, workdir = own_sqld
    url = server.ws_url if scheme == "ws" else server.http_url
    store = await open_store(store_config(url, tmp_path))
    episode = make_episode("survives a restart")
    await store.put_episodes([episode])
    server.stop()
    with pytest.raises(StoreUnavailable):
        await store.counts()
    restarted = start_sqld(workdir, sqld_command_or_skip(), port=server.port)
    try:
        assert (await store.counts())["episodes"] == 1
        [loaded] = await store.get_episodes([episode.episode_id])
        assert loaded == episode
    finally:
        await store.close()
        restarted.stop()


async def test_a_sql_error_is_a_storage_error_and_is_not_retried(
    sqld_server: SqldServer,
) -> None:
    executor = LibsqlExecutor(sqld_server.http_url, retry=FAST)
    try:
        with pytest.raises(StorageError, match="SQL_PARSE_ERROR") as caught:
            await executor.execute("SELEC 1")
        assert not isinstance(caught.value, StoreUnavailable)
    finally:
        await executor.close()


async def test_server_errors_are_retried_until_the_server_answers(
    sqld_server: SqldServer, tmp_path: Path
) -> None:
    failures = 2

    async def flaky_then_proxy(request: web.Request) -> web.StreamResponse:
        nonlocal failures
        if failures:
            failures -= 1
            return web.Response(status=503, text="overloaded")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                sqld_server.http_url + request.path,
                data=await request.read(),
                headers={"content-type": "application/json"},
            ) as upstream,
        ):
            body = await upstream.read()
            return web.Response(body=body, status=upstream.status, content_type="application/json")

    async with StandIn(flaky_then_proxy) as stand_in:
        executor = LibsqlExecutor(f"http://127.0.0.1:{stand_in.port}", retry=FAST)
        try:
            result = await executor.execute("SELECT 41 + 1")
        finally:
            await executor.close()
    assert result.rows == [(42,)]
    assert stand_in.requests == 3


@pytest.mark.parametrize(
    ("handler", "expected", "words"),
    [
        (status(429, headers={"Retry-After": "0"}), QuotaExceeded, "rate limited"),
        (
            status(
                400,
                text='{"message": "over quota", "code": "BLOCKED"}',
                content_type="application/json",
            ),
            QuotaExceeded,
            "quota",
        ),
        (status(502, text="bad gateway", content_type="text/plain"), StoreUnavailable, "502"),
    ],
)
async def test_throttling_quota_and_gateway_answers_are_retried_then_typed(
    handler: Handler, expected: type[StorageError], words: str
) -> None:
    async with StandIn(handler) as stand_in:
        executor = LibsqlExecutor(f"http://127.0.0.1:{stand_in.port}", retry=FAST)
        try:
            with pytest.raises(expected, match=words):
                await executor.batch([("INSERT INTO t VALUES (1)", ())])
        finally:
            await executor.close()
    assert stand_in.requests == FAST.max_retries + 1


@pytest.mark.parametrize(("code", "expected"), [(503, StoreUnavailable), (429, QuotaExceeded)])
async def test_a_refused_websocket_handshake_is_typed_by_its_status(
    code: int, expected: type[StorageError]
) -> None:
    async with StandIn(status(code)) as stand_in:
        executor = LibsqlExecutor(f"ws://127.0.0.1:{stand_in.port}", retry=FAST)
        try:
            with pytest.raises(expected):
                await executor.execute("SELECT 1")
        finally:
            await executor.close()
    assert stand_in.requests == FAST.max_retries + 1


async def test_an_auth_refusal_is_not_retried_and_never_shows_the_token() -> None:
    async def echo_auth(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, text=f"bad credentials: {request.headers['authorization']}")

    async with StandIn(echo_auth) as stand_in:
        executor = LibsqlExecutor(f"http://127.0.0.1:{stand_in.port}", auth_token=TOKEN, retry=FAST)
        try:
            with pytest.raises(StorageError) as caught:
                await executor.execute("SELECT 1")
        finally:
            await executor.close()
    assert stand_in.requests == 1
    assert not isinstance(caught.value, StoreUnavailable | QuotaExceeded)
    assert "401" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert "[REDACTED:token]" in str(caught.value)


async def test_a_server_that_never_answers_times_out_into_store_unavailable() -> None:
    stand_in: StandIn

    async def hang(_: web.Request) -> web.StreamResponse:
        await stand_in.release.wait()
        return web.Response(status=503)

    async with StandIn(hang) as stand_in:
        executor = LibsqlExecutor(
            f"http://127.0.0.1:{stand_in.port}", retry=FAST, request_timeout_s=0.05
        )
        try:
            with pytest.raises(StoreUnavailable, match="TimeoutError"):
                await executor.execute("SELECT 1")
        finally:
            await executor.close()
    assert stand_in.requests == FAST.max_retries + 1
