"""Block requests kept in flight, so a file streams at the speed of the connection.

One block at a time would wait a round trip per block; all of them at once would hold the
whole file in memory. Both helpers keep a bounded window of requests outstanding:
memory stays at ``window`` blocks, and the connection stays busy.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from itertools import islice
from typing import TypeVar

from m2m.registry import RegistryNode

Fetched = TypeVar("Fetched")


class BlockWriter:
    """The block INSERTs of one file, at most ``window`` in flight.

    Writes of the same block land in the order they were submitted (the next one waits
    for the previous); a failed write is raised by the next call that waits on it.
    """

    def __init__(self, node: RegistryNode, window: int) -> None:
        self._node = node
        self._window = window
        self._in_flight: dict[int, asyncio.Task[None]] = {}

    async def submit(self, index: int, data: bytes) -> None:
        """Start writing block ``index``; waits only while the window is full."""
        await self.wait_for(index)
        while len(self._in_flight) >= self._window:
            await asyncio.wait(self._in_flight.values(), return_when=asyncio.FIRST_COMPLETED)
            for finished in [i for i, task in self._in_flight.items() if task.done()]:
                self._in_flight.pop(finished).result()
        self._in_flight[index] = asyncio.create_task(self._node.write_block(index, data))

    async def wait_for(self, index: int) -> None:
        """Wait until block ``index`` is written, if a write of it is in flight."""
        task = self._in_flight.pop(index, None)
        if task is not None:
            await task

    async def drain(self) -> None:
        """Wait for every write in flight; raise the first failure."""
        tasks = list(self._in_flight.values())
        self._in_flight.clear()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def abandon(self) -> None:
        """Let the writes in flight finish, whatever their outcome (the file is given up)."""
        tasks = list(self._in_flight.values())
        self._in_flight.clear()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_ahead(
    fetch: Callable[[int], Awaitable[Fetched]], indexes: range, window: int
) -> AsyncGenerator[tuple[int, Fetched], None]:
    """``(index, await fetch(index))`` for each index, in order, ``window`` fetches ahead.

    Close it (``contextlib.aclosing``) when leaving early: fetches still out are cancelled.
    """

    async def fetching(index: int) -> tuple[int, Fetched]:
        return index, await fetch(index)

    upcoming = iter(indexes)
    in_flight = deque(asyncio.create_task(fetching(i)) for i in islice(upcoming, window))
    try:
        while in_flight:
            fetched = await in_flight.popleft()
            following = next(upcoming, None)
            if following is not None:
                in_flight.append(asyncio.create_task(fetching(following)))
            yield fetched
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
