"""What the simulated devices of both protocols share: a connection and its inboxes.

Tests and benchmarks play devices with :class:`~m2m.receivers.m2mp.client.M2MPClient` and
:class:`~m2m.receivers.alip.client.ALIPClient`. Both run on asyncio streams with one
reading task per connection and no thread, so one process can play thousands of devices.
What the server sends lands in inboxes, in arrival order; each wait takes the oldest item
it is interested in and leaves the others for later waits. A wait ends with
`ConnectionError` as soon as the connection is over, rather than at its timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self, TypeVar

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds a wait lasts unless told otherwise: long for a local server, short for a test."""
CLOSE_GRACE: Final = 5.0
"""Seconds a closed connection has to flush what was sent on it: a server that stopped
reading never takes it, and the connection is then cut."""

_READ_SIZE: Final = 65_536
_T = TypeVar("_T")


class DeviceClient(ABC):
    """One simulated device on one TCP connection; subclasses speak its protocol.

    Sending never waits (writes buffer into the transport; `drain` waits for the buffer
    to empty). Server pings are answered as they arrive while `answer_server_pings` is
    true.
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
        self._arrival = asyncio.Event()
        self._over = asyncio.Event()
        self._end_reason = ""
        self._cut: asyncio.TimerHandle | None = None
        self._reading = asyncio.create_task(self._read_until_over(reader))

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        answer_server_pings: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> Self:
        """A device connected to ``host:port``, inside TLS with the ``tls`` context if given
        (it says which CA the receiver's certificate must come from, and the device's own
        certificate if it has one)."""
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
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
    def over(self) -> bool:
        """Whether the connection is over (either side closed it, or it broke)."""
        return self._over.is_set()

    @property
    def end_reason(self) -> str:
        """Why the connection is over ("" while it is not)."""
        return self._end_reason if self.over else ""

    @property
    def local_address(self) -> str:
        """``ip:port`` of our end, as the server names its peer (events, ``DB SOURCE``)."""
        host, port, *_ = self._writer.get_extra_info("sockname")
        return f"{host}:{port}"

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are: for tests of what the server does with odd input."""
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait until what was sent has been handed to the operating system."""
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection once what was sent is flushed (cut after ``CLOSE_GRACE``
        s if the server does not read it); waits in progress end with `ConnectionError`."""
        self._end_reason = self._end_reason or "the client closed the connection"
        self._writer.close()
        if self._cut is None and not self.over:
            self._cut = asyncio.get_running_loop().call_later(
                CLOSE_GRACE, self._writer.transport.abort
            )

    async def closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the connection is over (the server closed it), False if still open."""
        try:
            async with asyncio.timeout(timeout):
                await self._over.wait()
        except TimeoutError:
            return False
        return True

    # --- for the protocols ------------------------------------------------------------

    @abstractmethod
    def _received(self, chunk: bytes) -> None:
        """Decode what arrived and put it in the inboxes (then call `_arrived`)."""

    def _arrived(self) -> None:
        self._arrival.set()

    def _broke(self, reason: str) -> None:
        """The server broke the protocol: a stream cannot be resynchronised, so hang up."""
        self._end_reason = f"the server broke the protocol: {reason}"
        self._writer.close()

    async def _take(
        self, inbox: list[_T], wanted: Callable[[_T], bool], timeout: float, what: str
    ) -> _T:
        """The oldest item of `inbox` that is `wanted`, waiting for it if need be."""

        def oldest_wanted() -> _T | None:
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
        try:
            while chunk := await reader.read(_READ_SIZE):
                self._received(chunk)
            self._end_reason = self._end_reason or "the server closed the connection"
        except OSError as error:
            self._end_reason = self._end_reason or f"the connection broke: {error}"
        finally:
            self._over.set()
            self._arrival.set()  # waits see the end instead of sleeping to their timeout
            if self._cut is not None:
                self._cut.cancel()
