"""The MCP server as a host runs it: a subprocess on stdio, driven by the SDK's own client.

Each server uses the in-process backend (no Ray) and its own data folder. A client is entered
and left inside one background task, because the SDK's anyio task groups must exit in the task
that entered them, while pytest-asyncio sets up and tears down fixtures in different tasks.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from mcp import Client, StdioServerParameters
from mcp_helpers import CALL_TIMEOUT_S, START_TIMEOUT_S, Connect, stdio_params


async def _hold(client: Client, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
    async with client:
        ready.set_result(client)
        await stop.wait()


class Clients:
    """SDK clients, each held open by its own task until ``close_all``."""

    def __init__(self) -> None:
        self._held: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def open(self, server: StdioServerParameters | str, mode: str = "legacy") -> Client:
        """``mode="legacy"`` is the initialize handshake today's hosts use."""
        stop = asyncio.Event()
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        client = Client(server, read_timeout_seconds=CALL_TIMEOUT_S, mode=mode)
        task = asyncio.create_task(_hold(client, ready, stop))
        self._held.append((stop, task))
        await asyncio.wait({task, ready}, timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED")
        if not ready.done():
            why = task.exception() if task.done() else f"no answer in {START_TIMEOUT_S}s"
            raise AssertionError(f"the MCP client did not connect: {why!r}")
        return ready.result()

    async def close_all(self) -> None:
        for stop, _task in self._held:
            stop.set()
        tasks = [task for _stop, task in self._held]
        await asyncio.wait_for(asyncio.gather(*tasks), START_TIMEOUT_S)


@pytest.fixture(scope="module")
async def mcp_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """One server (stdio, in-process backend, no rate limit) shared by a module's tests."""
    clients = Clients()
    try:
        yield await clients.open(stdio_params(tmp_path_factory.mktemp("mcp-memory")))
    finally:
        await clients.close_all()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Connect clients to servers of a test's own (stdio params or an HTTP URL)."""
    clients = Clients()
    try:
        yield clients.open
    finally:
        await clients.close_all()
