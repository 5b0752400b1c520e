"""Handling a connection's input strictly in order, even when some steps must wait.

Most steps are synchronous (publish a frame, answer a ping) and run at once. A step that
returns an awaitable (identification asks the registry) holds back every later step of
the same connection until it completes, so a device's data never overtakes its own
identification. A failing step is reported, and the steps after it still run. Nothing is
dropped when the connection ends: what the device sent was accepted, and is handled.

What waits is bounded: each step counts the bytes it carries (a line, a frame's data)
plus ``STEP_COST`` for itself, and past ``limit`` bytes waiting the owner is told to stop
reading from the device (``on_backlog(True)``) until every waiting step ran
(``on_backlog(False)``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

Step = Callable[[], Awaitable[None] | None]

STEP_COST = 200
"""Bytes a waiting step counts for besides what it carries: its closure and queue entry."""
DEFAULT_LIMIT = 1000 * STEP_COST


class InOrder:
    def __init__(
        self,
        on_error: Callable[[BaseException], None],
        on_backlog: Callable[[bool], None],
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self._on_error = on_error
        self._on_backlog = on_backlog
        self._limit = limit
        self._waiting: deque[tuple[Step, int]] = deque()
        self._waiting_bytes = 0
        self._current: asyncio.Future[None] | None = None
        self._over_limit = False

    @property
    def backlog(self) -> int:
        """Steps waiting behind one that has not completed."""
        return len(self._waiting)

    @property
    def backlog_bytes(self) -> int:
        """What the waiting steps count for (see the module's docstring)."""
        return self._waiting_bytes

    def submit(self, step: Step, size: int = 0) -> None:
        """Run ``step`` after the steps before it; ``size``: the bytes it carries."""
        cost = size + STEP_COST
        self._waiting.append((step, cost))
        self._waiting_bytes += cost
        if self._current is None:
            self._run_waiting()
        elif not self._over_limit and self._waiting_bytes >= self._limit:
            self._over_limit = True
            self._on_backlog(True)

    def _run_waiting(self) -> None:
        while self._waiting and self._current is None:
            step, cost = self._waiting.popleft()
            self._waiting_bytes -= cost
            try:
                pending = step()
            except Exception as exc:
                self._on_error(exc)
                continue
            if pending is not None:
                self._current = asyncio.ensure_future(pending)
                self._current.add_done_callback(self._completed)
        if self._over_limit and not self._waiting:
            self._over_limit = False
            self._on_backlog(False)

    def _completed(self, future: asyncio.Future[None]) -> None:
        self._current = None
        if not future.cancelled() and future.exception() is not None:
            self._on_error(future.exception())  # type: ignore[arg-type]
        self._run_waiting()
