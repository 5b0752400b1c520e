"""A device's side of ALIP over real TCP, for tests and benchmarks that play devices.

The twin of :mod:`m2m.receivers.m2mp.client`, on asyncio streams: one reading task per
connection and no thread, so one process can play thousands of devices.

Every line the server sends lands in one inbox, in arrival order, except its pings
(``A <n>``): those are answered ``B <n>`` as they arrive (unless told not to) and kept
apart for `receive_server_ping`, so a ping that happens to arrive while a test waits for
an answer never takes that answer's place. Each wait takes the oldest line it is
interested in (any line, or one starting with a prefix) and leaves the others for later
waits. A wait ends with `ConnectionError` as soon as the connection is over, rather than
at its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self, TypeVar

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds a wait lasts unless told otherwise: long for a local server, short for a test."""

_READ_SIZE: Final = 65_536
_SERVER_PING: Final = "A "
_T = TypeVar("_T")


class LineRefused(Exception):
    """The server answered ``ERR <reason>`` where the client expected an answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ALIPClient:
    """One simulated device on one TCP connection.

    Sending never waits (``send_*`` buffer into the transport; `drain` waits for the
    buffer to empty). Lines are given and returned without their ``\\n``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        answer_server_pings: bool = True,
    ) -> None:
        self.answer_server_pings = answer_server_pings
        self._writer = writer
        self._lines: list[str] = []
        self._server_pings: list[str] = []
        self._arrival = asyncio.Event()
        self._over = asyncio.Event()
        self._end_reason = ""
        self._reading = asyncio.create_task(self._read_until_over(reader))

    @classmethod
    async def connect(cls, host: str, port: int, *, answer_server_pings: bool = True) -> Self:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, answer_server_pings=answer_server_pings)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self._reading

    @property
    def local_address(self) -> str:
        """``ip:port`` of our end, as the server names its peer (``DB SOURCE``, events)."""
        host, port, *_ = self._writer.get_extra_info("sockname")
        return f"{host}:{port}"

    # --- Sending ------------------------------------------------------------------------

    def send_line(self, text: str) -> None:
        """Send one line; its ``\\n`` is added here, so `text` must not contain one."""
        if "\n" in text:
            raise ValueError(f"one line at a time, without its newline: {text!r}")
        self._writer.write(f"{text}\n".encode())

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are: for tests of what the server does with odd input."""
        self._writer.write(data)

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

    async def drain(self) -> None:
        """Wait until what was sent has been handed to the operating system."""
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection; waits in progress end with `ConnectionError`."""
        self._end_reason = self._end_reason or "the client closed the connection"
        self._writer.close()

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

    async def closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the connection is over (the server closed it), False if still open."""
        try:
            async with asyncio.timeout(timeout):
                await self._over.wait()
        except TimeoutError:
            return False
        return True

    async def _take(
        self, inbox: list[str], wanted: Callable[[str], bool], timeout: float, what: str
    ) -> str:
        def oldest_wanted() -> str | None:
            for index, item in enumerate(inbox):
                if wanted(item):
                    return inbox.pop(index)
            return None

        return await self._until(oldest_wanted, timeout, what)

    async def _until(self, found: Callable[[], _T | None], timeout: float, what: str) -> _T:
        """Wait until `found` finds something in the inboxes, looking again at each arrival."""
        async with asyncio.timeout(timeout):
            while (result := found()) is None:
                if self._over.is_set():
                    raise ConnectionError(f"no {what} came: {self._end_reason}")
                self._arrival.clear()
                await self._arrival.wait()
            return result

    async def _read_until_over(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        try:
            while chunk := await reader.read(_READ_SIZE):
                searched = len(buffer)  # no newline before: look only in the new bytes
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", max(start, searched))) >= 0:
                    self._handle(buffer[start:end].decode("utf-8", "replace").removesuffix("\r"))
                    start = end + 1
                del buffer[:start]
            self._end_reason = self._end_reason or "the server closed the connection"
        except OSError as error:
            self._end_reason = self._end_reason or f"the connection broke: {error}"
        finally:
            self._over.set()
            self._arrival.set()  # waits see the end instead of sleeping to their timeout

    def _handle(self, line: str) -> None:
        if line.startswith(_SERVER_PING):
            counter = line.removeprefix(_SERVER_PING)
            if self.answer_server_pings and not self._writer.is_closing():
                self.send_line(f"B {counter}")
            self._server_pings.append(counter)
        else:
            self._lines.append(line)
        self._arrival.set()
