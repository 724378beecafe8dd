"""One store contract, three backends: a ``file:`` database, and a real sqld over ws and http.

The sqld is shared by the session (it starts in well under a second but there is no fresh
namespace per test), so every remote test starts from emptied tables. Remote tests skip when no
sqld binary is found, except under ``EPISODIC_MEMORY_REQUIRE_SQLD=1`` (CI), where that fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from store_helpers import clear, sqld_command_or_skip, store_config

from episodic_memory.storage.libsql_store import SqlEpisodeStore, open_store
from support.sqld import SqldServer, running_sqld

BACKENDS = ("file", "ws", "http")


@pytest.fixture(scope="session")
def sqld_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqldServer]:
    command = sqld_command_or_skip()
    with running_sqld(tmp_path_factory.mktemp("sqld"), command) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "file":
        return f"file:{tmp_path / 'nested' / 'memory.db'}"
    server: SqldServer = request.getfixturevalue("sqld_server")
    return server.ws_url if backend == "ws" else server.http_url


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[SqlEpisodeStore]:
    opened = await open_store(store_config(database_url, tmp_path))
    assert isinstance(opened, SqlEpisodeStore)
    await clear(opened)
    yield opened
    await opened.close()
