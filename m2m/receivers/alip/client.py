"""A device's side of ALIP over real TCP, for tests and benchmarks that play devices.

The twin of :mod:`m2m.receivers.m2mp.client` (connection and inbox handling are
:class:`~m2m.receivers.device_client.DeviceClient`'s). Every line the server sends lands in
one inbox, in arrival order, except its pings (``A <n>``): those are answered ``B <n>`` as
they arrive (unless told not to) and kept apart for `receive_server_ping`, so a ping that
happens to arrive while a test waits for an answer never takes that answer's place.
"""

from __future__ import annotations

import asyncio
from typing import Final

from m2m.receivers.device_client import DEFAULT_TIMEOUT, DeviceClient

_SERVER_PING: Final = "A "


class LineRefused(Exception):
    """The server answered ``ERR <reason>`` where the client expected an answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ALIPClient(DeviceClient):
    """One simulated ALIP device. Lines are given and returned without their ``\\n``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        answer_server_pings: bool = True,
    ) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._server_pings: list[str] = []
        super().__init__(reader, writer, answer_server_pings=answer_server_pings)

    # --- Sending ------------------------------------------------------------------------

    def send_line(self, text: str) -> None:
        """Send one line; its ``\\n`` is added here, so `text` must not contain one."""
        if "\n" in text:
            raise ValueError(f"one line at a time, without its newline: {text!r}")
        self._writer.write(f"{text}\n".encode())

    async def identify(self, ident: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Say who we are; True for ``ID 1``, False for ``ID 0``.

        Raises `LineRefused` when the server answers ``ERR`` (a malformed ident, or this
        connection identified already): that is a mistake of the caller, not a refusal.
        """
        self.send_line(f"ID {ident}")
        answer = await self.receive_line(timeout, prefix=("ID ", "ERR "))
        if answer.startswith("ERR "):
            raise LineRefused(answer.removeprefix("ERR "))
        return answer == "ID 1"

    async def ping(self, token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Ask ``A <token>`` and wait for the server's ``B <token>``."""
        self.send_line(f"A {token}")
        await self.receive_line(timeout, prefix=f"B {token}", exact=True)

    # --- Receiving ----------------------------------------------------------------------

    async def receive_line(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        prefix: str | tuple[str, ...] = "",
        exact: bool = False,
    ) -> str:
        """The oldest line not taken yet that starts with `prefix` (any line by default).

        With `exact`, the line must equal `prefix` (one of them, for a tuple). Lines that
        do not match stay in the inbox for later waits.
        """
        prefixes = (prefix,) if isinstance(prefix, str) else prefix

        def wanted(line: str) -> bool:
            return line in prefixes if exact else line.startswith(prefixes)

        return await self._take(self._lines, wanted, timeout, f"line {prefix!r}")

    async def receive_block(
        self, first: str, last: str, timeout: float = DEFAULT_TIMEOUT
    ) -> list[str]:
        """The lines between the oldest `first` and the next `last`, both taken, not returned.

        For multi-line answers such as ``BEGIN LAST`` … ``END``, whose inner lines have no
        prefix of their own; lines that arrived before `first` stay in the inbox.
        """

        def block() -> list[str] | None:
            lines = self._lines
            try:
                start = lines.index(first)
                end = lines.index(last, start + 1)
            except ValueError:  # not complete yet
                return None
            inner = lines[start + 1 : end]
            del lines[start : end + 1]
            return inner

        return await self._until(block, timeout, f"{first!r} … {last!r}")

    async def receive_server_ping(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The counter of the oldest server ping (``A <counter>``), answered or not."""
        return await self._take(self._server_pings, lambda _: True, timeout, "server ping")

    @property
    def unread(self) -> list[str]:
        """The lines no wait has taken yet, oldest first (a copy)."""
        return list(self._lines)

    def _received(self, chunk: bytes) -> None:
        buffer = self._buffer
        searched = len(buffer)  # no newline before: look only in the new bytes
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", max(start, searched))) >= 0:
            self._handle(buffer[start:end].decode("utf-8", "replace").removesuffix("\r"))
            start = end + 1
        del buffer[:start]

    def _handle(self, line: str) -> None:
        if line.startswith(_SERVER_PING):
            counter = line.removeprefix(_SERVER_PING)
            if self.answer_server_pings and not self._writer.is_closing():
                self.send_line(f"B {counter}")
            self._server_pings.append(counter)
        else:
            self._lines.append(line)
        self._arrived()
