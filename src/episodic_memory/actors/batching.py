"""Group commit: concurrent writers share one call to the store.

A call across the Ray boundary costs ~1 ms whatever it carries, so when many episodes flush at
the same moment (their timers fired in the same loop turn, or a burst of completions) their
writes should travel together. ``GroupCommit.submit`` parks the items and awaits the send that
carries them; one drain task sends everything parked since the previous send in one call. No
timer is involved: the drain task runs one loop turn after the first submission, which is
exactly enough for the other writers woken in that turn to join, and while a send is in flight
new submissions queue for the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer", "GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T]):
    """Coalesce concurrent ``submit`` calls into ``send(items)`` calls of at most ``max_items``.

    Every submitter gets the outcome of the send that carried its items: ``None`` or that
    send's exception. A submission is never split across sends, so one submitter's items stay
    in one transaction.
    """

    def __init__(self, send: Callable[[list[T]], Awaitable[object]], *, max_items: int) -> None:
        self._send = send
        self._max_items = max(1, max_items)
        self._pending: list[tuple[list[T], asyncio.Future[None]]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self.sends = 0  # calls made, for stats and tests
        self.items = 0

    async def submit(self, items: Sequence[T]) -> None:
        if not items:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((list(items), future))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._pending:
            batch: list[T] = []
            waiters: list[asyncio.Future[None]] = []
            while self._pending and (
                not batch or len(batch) + len(self._pending[0][0]) <= self._max_items
            ):
                items, future = self._pending.pop(0)
                batch.extend(items)
                waiters.append(future)
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                for future in waiters:
                    future.cancel()
                raise
            except Exception as exc:
                for future in waiters:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.sends += 1
            self.items += len(batch)
            for future in waiters:
                if not future.done():
                    future.set_result(None)


class Coalescer(Generic[T, R]):
    """Coalesce concurrent calls into ``send(items) -> results`` calls, one result per item.

    Like ``GroupCommit`` but each caller gets its own answer: ``send`` returns one value per
    item, in order, and a value that is an exception is raised to that caller only. Used by
    clients so that many agents' bursts to the same host share one actor call.
    """

    def __init__(
        self, send: Callable[[list[T]], Awaitable[list[R | BaseException]]], *, max_items: int
    ) -> None:
        self._send = send
        self._max_items = max(1, max_items)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self.sends = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = (
                self._pending[: self._max_items],
                self._pending[self._max_items :],
            )
            try:
                results = await self._send([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                results = [exc] * len(batch)
            self.sends += 1
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
