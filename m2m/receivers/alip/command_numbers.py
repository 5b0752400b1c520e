"""The short numbers an ALIP connection gives commands: ``C <n> <text>``, acknowledged ``C A <n>``.

Command ids are UUIDs, too long for a terse device, so each connection numbers the
commands it sends from 0, a new number each time one is sent (``C L`` sends them again
under new numbers; the old ones still stand for them). A device asking ``C L`` over and
over must not grow the receiver's memory: at most ``limit`` numbers are remembered, the
oldest forgotten first (a device acknowledging one of those is answered ``ERR`` and gets
the command again on ``C L``).
"""

from __future__ import annotations


class CommandNumbers:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a connection must remember at least one command number")
        self._limit = limit
        self._next = 0
        self._ids: dict[int, str] = {}
        """Number -> command id, oldest first."""

    def __len__(self) -> int:
        return len(self._ids)

    def number(self, command_id: str) -> int:
        """A new number for ``command_id`` on this connection."""
        if len(self._ids) == self._limit:
            del self._ids[next(iter(self._ids))]
        number = self._next
        self._next += 1
        self._ids[number] = command_id
        return number

    def acknowledged(self, number: int) -> str | None:
        """The command id ``number`` stands for, forgotten now; None if it stands for none."""
        return self._ids.pop(number, None)
