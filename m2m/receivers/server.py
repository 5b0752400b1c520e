"""What both receivers share on the Twisted side: the live connections, back-pressure, timers.

:class:`DeviceServerFactory` keeps its protocols, so it can pause them all when the bus
cannot take more (and resume them after), walk them periodically for pings and timeouts,
and close them at shutdown. :class:`ReceiverService` listens on a Twisted endpoint string.
"""

from __future__ import annotations

import asyncio
import logging
import time

from twisted.internet import endpoints, protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorCore, ITransport
from twisted.internet.task import LoopingCall

from m2m.receivers.session import ReceiverContext

log = logging.getLogger(__name__)


def _port_of(address: IAddress) -> int:
    return address.port if isinstance(address, IPv4Address | IPv6Address) else 0


def peer_address(transport: ITransport | None) -> str:
    """``ip:port`` of the device, as events and records name it."""
    peer = transport.getPeer() if transport is not None else None
    if isinstance(peer, IPv4Address | IPv6Address):
        return f"{peer.host}:{peer.port}"
    return str(peer)


class DeviceProtocol(protocol.Protocol):
    """A device connection; the receivers' protocols implement ``tick``."""

    factory: DeviceServerFactory
    backlogged = False
    """Too many of its steps wait for earlier ones: not read until they ran."""

    def tick(self, now: float) -> None:
        """Called every sweep interval with ``time.monotonic()``: pings and timeouts."""

    def on_backlog(self, full: bool) -> None:
        """The connection's own back-pressure (see :class:`InOrder`)."""
        self.backlogged = full
        if full:
            self.pause_reading()
        elif not self.factory.paused:
            self.resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        if self.transport is not None and not self.backlogged:
            self.transport.resumeProducing()  # type: ignore[attr-defined]


class DeviceServerFactory(protocol.ServerFactory[DeviceProtocol]):
    def __init__(self, context: ReceiverContext, protocol_class: type[DeviceProtocol]) -> None:
        self.context = context
        self.protocol = protocol_class
        self.live: set[DeviceProtocol] = set()
        self.paused = False
        self._sweeper = LoopingCall(self._sweep)

    def joined(self, connection: DeviceProtocol) -> None:
        self.live.add(connection)
        if self.paused:
            connection.pause_reading()

    def left(self, connection: DeviceProtocol) -> None:
        self.live.discard(connection)

    def on_pressure(self, paused: bool) -> None:
        """The bus's pressure listener: stop reading from every device, or start again."""
        self.paused = paused
        for connection in list(self.live):
            if paused:
                connection.pause_reading()
            else:
                connection.resume_reading()

    def startFactory(self) -> None:
        self.context.publisher.add_pressure_listener(self.on_pressure)
        self._sweeper.start(self.context.timing.sweep_interval, now=False)

    def stopFactory(self) -> None:
        self.context.publisher.remove_pressure_listener(self.on_pressure)
        if self._sweeper.running:
            self._sweeper.stop()

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.live):
            try:
                connection.tick(now)
            except Exception:
                log.exception("sweep of a connection failed")

    def close_all(self) -> None:
        for connection in list(self.live):
            if connection.transport is not None:
                connection.transport.loseConnection()


class ReceiverService:
    """A factory listening on an endpoint string, until stopped."""

    def __init__(self, name: str, listen: str, factory: DeviceServerFactory) -> None:
        self.name = name
        self.listen = listen
        self.factory = factory
        self._port: IListeningPort | None = None

    async def start(self, reactor: IReactorCore) -> int:
        """Listen; returns the TCP port (useful when the endpoint asked for port 0)."""
        endpoint = endpoints.serverFromString(reactor, self.listen)
        listening: IListeningPort = await Deferred.asFuture(
            endpoint.listen(self.factory), asyncio.get_running_loop()
        )
        self._port = listening
        port = _port_of(listening.getHost())
        log.info("%s receiver listening on %s (port %d)", self.name, self.listen, port)
        return port

    async def stop(self) -> None:
        """Stop accepting, then close the devices' connections (their sessions end cleanly)."""
        if self._port is not None:
            await Deferred.asFuture(
                self._port.stopListening(),  # type: ignore[arg-type]
                asyncio.get_running_loop(),
            )
            self._port = None
        self.factory.close_all()
