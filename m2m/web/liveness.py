"""Which receiver processes are alive, from their heartbeats on ``events``.

A device shows connected only while the receiver process holding it is alive: one that
has not said ``receiver_alive`` for ``MISSED_BEATS`` intervals is taken for dead, and its
devices for disconnected, whatever their last ``_server`` record says. A receiver this
web process has not heard from yet gets the same time from the moment it started.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MISSED_BEATS = 3


class ReceiverLiveness:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._timeout = MISSED_BEATS * interval
        self._started = clock()
        self._beats: dict[str, float] = {}
        self._lost: set[str] = set()

    def beat(self, receiver: str) -> None:
        self._beats[receiver] = self._clock()
        self._lost.discard(receiver)

    def alive(self, receiver: str | None) -> bool:
        """Whether ``receiver`` still beats; None (records older than heartbeats): yes."""
        if receiver is None:
            return True
        return self._clock() - self._beats.get(receiver, self._started) < self._timeout

    def newly_lost(self) -> list[str]:
        """The receivers heard from that stopped beating since the last call."""
        lost = [r for r in self._beats if r not in self._lost and not self.alive(r)]
        self._lost.update(lost)
        return sorted(lost)
