"""Splitting an ALIP byte stream into lines, with a bound on their length.

Lines end with ``\\n`` (a ``\\r`` before it is dropped). A line longer than the bound is
not kept: it is reported once as :data:`OVERLONG`, and everything up to its end is thrown
away, so one bad line costs the device an ``ERR`` answer, not its connection.
"""

from __future__ import annotations

from typing import Final

MAX_LINE_LENGTH: Final = 64 * 1024
OVERLONG: Final = None
"""Stands in the output for a line that was too long."""


class LineSplitter:
    def __init__(self, max_length: int = MAX_LINE_LENGTH) -> None:
        self._max_length = max_length
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | None]:
        """The complete lines in ``data`` (with what was buffered), ``OVERLONG`` for each
        line over the bound."""
        lines: list[bytes | None] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                self._buffer += data[start:end]
                lines.append(self._take() if len(self._buffer) <= self._max_length else OVERLONG)
                self._buffer.clear()
            start = end + 1
        if not self._discarding:
            self._buffer += data[start:]
            if len(self._buffer) > self._max_length:
                lines.append(OVERLONG)
                self._buffer.clear()
                self._discarding = True
        return lines

    def _take(self) -> bytes:
        line = bytes(self._buffer)
        return line[:-1] if line.endswith(b"\r") else line
