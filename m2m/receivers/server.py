"""What both receivers share on the Twisted side: the connection's wiring, limits, timers.

:class:`DeviceProtocol` is a device connection whatever its protocol: its session and its
in-order steps, admission and departure, writing to the device, and when to stop reading
from it. :class:`DeviceServerFactory` keeps its protocols, so it can pause them all when
the bus cannot take more (and resume them after), walk them periodically for pings and
timeouts, and close them at shutdown. :class:`ReceiverService` listens on Twisted endpoint
strings, a port each; with a client CA, its ``ssl:`` ports require device certificates
that CA signed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from OpenSSL.crypto import X509
from twisted.internet import endpoints, protocol, ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IPushProducer,
    IReactorCore,
    ISSLTransport,
    IStreamServerEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from m2m.endpoints import TCP_KINDS, parse_endpoint
from m2m.logs import ConnectionLog
from m2m.metrics import ReceiverMetrics
from m2m.receivers.ordering import InOrder
from m2m.receivers.session import DeviceSession, ReceiverContext
from m2m.receivers.session_rules import Close, Ping, ProtocolRules
from m2m.tls import TLSError

log = logging.getLogger(__name__)

CLOSE_GRACE: Final = 10.0
"""Seconds a closing connection has to take what was written to it; then it is cut."""
BUS: Final = "the bus takes no more"
BACKLOG: Final = "what the device sent waits its turn"
OUTPUT: Final = "the device does not read what it is sent"
LISTEN_BACKLOG: Final = 1024
"""Connections the kernel queues until the receiver accepts them, unless the listen string
says (``backlog=``). When a cellular network comes back, a whole fleet connects within
seconds: with Twisted's default of 50 the kernel drops the rest of the handshakes, and
those devices try again only a second or more later."""


def _port_of(address: IAddress) -> int:
    return address.port if isinstance(address, IPv4Address | IPv6Address) else 0


def _host_of(address: IAddress | None) -> str:
    return address.host if isinstance(address, IPv4Address | IPv6Address) else str(address)


def peer_address(transport: ITransport | None) -> str:
    """``ip:port`` of the device, as events and records name it."""
    peer = transport.getPeer() if transport is not None else None
    if isinstance(peer, IPv4Address | IPv6Address):
        return f"{peer.host}:{peer.port}"
    return str(peer)


@implementer(IPushProducer)
class DeviceProtocol(protocol.Protocol, metaclass=ABCMeta):
    """A device connection; the receivers' protocols decode and handle what comes.

    Reading from the device pauses while anything holds it: the bus takes no more (the
    factory's pressure), what the device sent waits its turn beyond
    ``receivers.limits.buffered_bytes`` (the steps' backlog), or the device does not read
    what it is sent (the connection is its transport's producer: the transport pauses it
    when its buffer to the device is full). Subclasses set up their decoder before
    calling ``connectionMade``, and implement ``feed``, ``answer_identification``,
    ``ping`` and the session's :class:`DeviceLink`; the session's rules decide the rest.
    """

    factory: DeviceServerFactory
    session: DeviceSession
    log: ConnectionLog
    """The connection's, under its protocol's module (``m2m.receivers.m2mp.protocol``…)."""
    metrics: ReceiverMetrics
    """The protocol's own (each subclass sets it)."""
    rules: ProtocolRules
    """How its sessions differ from the other protocol's (each subclass sets it)."""
    steps: InOrder
    admitted_from = ""
    """The peer's IP address, as admission counted it."""
    closing = False
    """``close`` was called: nothing more is written."""
    gone = False
    """The connection is lost: what only answers the device need not run."""
    _abort: asyncio.TimerHandle | None = None

    def connectionMade(self) -> None:
        context = self.factory.context
        self._holds: set[str] = set()
        self._output_drained = asyncio.Event()
        self._output_drained.set()
        self.steps = InOrder(self._step_failed, self.on_backlog, context.limits.buffered_bytes)
        self.session = DeviceSession(context, self, peer_address(self.transport), self.rules)
        self.log = ConnectionLog(logging.getLogger(type(self).__module__), self.session)
        self.metrics.accepted.inc()
        self.metrics.open.inc()
        self.session.opened()
        self.factory.joined(self)
        transport = self.transport
        assert transport is not None
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        if ITCPTransport.providedBy(transport):
            # A device that vanished without a word (power cut, lost coverage) otherwise
            # holds its connection, and a place among the limits, for ever.
            transport.setTcpKeepAlive(True)

    def connectionLost(self, reason: object = None) -> None:
        self.gone = True
        if self._abort is not None:
            self._abort.cancel()
        self.metrics.open.dec()
        if self.session.device is not None:
            self.metrics.identified.dec()
        self.factory.left(self)
        self._output_drained.set()
        self.steps.submit(self.session.closed)  # after what the device sent before leaving

    def dataReceived(self, data: bytes) -> None:
        self.session.rules.received(time.monotonic())
        self.metrics.received_bytes.inc(len(data))
        self.feed(data)

    @abstractmethod
    def feed(self, data: bytes) -> None:
        """Decode what the device sent and submit a step for each frame or line."""

    def _step_failed(self, exc: BaseException) -> None:
        """A step of the connection raised ``exc``: logged (ALIP answers ``ERR`` too)."""
        self.log.error("%r", exc, exc_info=exc)

    async def identify(self, ident: str) -> None:
        """The device says who it is: answered, then greeted if accepted."""
        greeting = await self.session.identify(ident)
        self.answer_identification(greeting is not None)
        if greeting is not None:
            self.session.greet(greeting)

    @abstractmethod
    def answer_identification(self, accepted: bool) -> None: ...

    def tick(self, now: float) -> None:
        """Called every sweep interval with ``time.monotonic()``: pings and timeouts."""
        match self.session.rules.tick(now):
            case Close(cause=cause):
                self.log.info("closing it: %s", cause.replace("_", " "))
                self.farewell(cause)
                self.close(cause)
            case Ping(counter=counter):
                self.ping(counter)

    @abstractmethod
    def ping(self, counter: int) -> None:
        """Ask the device whether it is there."""

    def farewell(self, cause: str) -> None:
        """Tell the device why it is disconnected, if the protocol can (``cause`` as
        :class:`~m2m.receivers.session_rules.Close` gives it)."""

    # -- the session's DeviceLink ------------------------------------------------------

    @abstractmethod
    def send_settings(self, settings: Sequence[tuple[str, str]]) -> None: ...

    @abstractmethod
    def send_commands(self, commands: Sequence[tuple[str, str]]) -> None: ...

    @abstractmethod
    def request_all_settings(self) -> None: ...

    @abstractmethod
    def request_capabilities(self) -> None: ...

    # -- writing to the device ---------------------------------------------------------

    def peer_certificate(self) -> x509.Certificate | None:
        """The certificate the device presented in the TLS handshake (None: it had none, or
        the connection is not TLS)."""
        transport = self.transport
        if not ISSLTransport.providedBy(transport):
            return None
        presented = transport.getPeerCertificate()
        return presented.to_cryptography() if isinstance(presented, X509) else None

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)
            self.session.rules.sent(time.monotonic())

    async def drained(self) -> None:
        """Wait until the device read what it was sent (the buffer to it is below bound)."""
        await self._output_drained.wait()

    def close(self, cause: str) -> None:
        """Close once what was written is sent, or after ``CLOSE_GRACE`` s if the device
        does not read it: a device must not hold its connection by not reading. ``cause``
        (a word, ``identification_timeout``) is counted in the metrics."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.metrics.closed(cause)
            self.transport.loseConnection()
            self._abort = asyncio.get_running_loop().call_later(CLOSE_GRACE, self._cut)

    def _cut(self) -> None:
        if not self.gone and self.transport is not None:
            self.log.info("cut, its device did not read what it was sent")
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- when to read from the device --------------------------------------------------

    def on_backlog(self, full: bool) -> None:
        """The connection's own back-pressure (see :class:`InOrder`)."""
        self._hold(BACKLOG) if full else self._release(BACKLOG)

    def pause_reading(self) -> None:
        """The bus takes no more."""
        self._hold(BUS)

    def resume_reading(self) -> None:
        self._release(BUS)

    def pauseProducing(self) -> None:
        """The transport's buffer to the device is full."""
        self._output_drained.clear()
        self._hold(OUTPUT)

    def resumeProducing(self) -> None:
        self._output_drained.set()
        self._release(OUTPUT)

    def stopProducing(self) -> None:
        """The connection is going: ``connectionLost`` follows."""

    def _hold(self, reason: str) -> None:
        if not self._holds and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._holds.add(reason)

    def _release(self, reason: str) -> None:
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]


class DeviceServerFactory(protocol.ServerFactory[DeviceProtocol]):
    def __init__(self, context: ReceiverContext, protocol_class: type[DeviceProtocol]) -> None:
        self.context = context
        self.protocol = protocol_class
        self._metrics = protocol_class.metrics
        self.live: set[DeviceProtocol] = set()
        self.paused = False
        self._sweeper = LoopingCall(self._sweep)

    def buildProtocol(self, addr: IAddress | None) -> DeviceProtocol | None:
        """A connection, if admission lets it in; None closes it at once."""
        host = _host_of(addr)
        if not self.context.admission.admit(host):
            self._metrics.refused.inc()
            return None
        connection = super().buildProtocol(addr)
        assert connection is not None
        connection.admitted_from = host
        return connection

    def joined(self, connection: DeviceProtocol) -> None:
        self.live.add(connection)
        if self.paused:
            connection.pause_reading()

    def left(self, connection: DeviceProtocol) -> None:
        self.live.discard(connection)
        self.context.admission.left(connection.admitted_from)

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
                connection.log.exception("its sweep failed")

    def close_all(self) -> None:
        for connection in list(self.live):
            connection.close("shutdown")


def with_backlog(listen: str) -> str:
    """``listen`` with ``LISTEN_BACKLOG`` when it is a TCP endpoint that names no backlog."""
    endpoint = parse_endpoint(listen)
    if endpoint.kind in TCP_KINDS and endpoint.backlog is None:
        return f"{listen}:backlog={LISTEN_BACKLOG}"
    return listen


def verifying_endpoint(
    reactor: IReactorCore, listen: str, client_ca: Path
) -> endpoints.SSL4ServerEndpoint:
    """The endpoint of the ``ssl:`` string ``listen``, requiring client certificates
    ``client_ca`` signed: a device without one, or with another CA's, fails the TLS
    handshake."""
    spec = parse_endpoint(listen)
    private_key = spec.options.get("privateKey")
    if private_key is None:
        raise TLSError(f"client_ca needs an ssl: listen string with a privateKey, not {listen!r}")
    try:
        key = Path(private_key).read_bytes()
        certificate = Path(spec.options.get("certKey", private_key)).read_bytes()
        authority = client_ca.read_bytes()
    except OSError as exc:
        raise TLSError(f"cannot read {exc.filename}: {exc.strerror}") from None
    options = ssl.PrivateCertificate.loadPEM(certificate + b"\n" + key).options(
        ssl.Certificate.loadPEM(authority)
    )
    return endpoints.SSL4ServerEndpoint(
        reactor, spec.port or 0, options, spec.backlog or LISTEN_BACKLOG, spec.interface
    )


class ReceiverService:
    """A factory listening on endpoint strings, a port each, until stopped.

    The ports share the factory, so its limits, bus pressure and sweeps cover every one of
    them: a plain port and a TLS port side by side serve one fleet. With a client CA, the
    ``ssl:`` ports require device certificates it signed and the others stay plain; a
    client CA with no ``ssl:`` port at all is an error, not a CA that protects nothing.
    """

    def __init__(
        self,
        name: str,
        endpoint_strings: Sequence[str],
        factory: DeviceServerFactory,
        client_ca: Path | None = None,
    ) -> None:
        self.name = name
        self.endpoint_strings = tuple(endpoint_strings)
        self.factory = factory
        self.client_ca = client_ca
        self._ports: list[IListeningPort] = []

    async def start(self, reactor: IReactorCore) -> list[int]:
        """Listen on each endpoint; returns their TCP ports in order (useful when an
        endpoint asked for port 0). Every endpoint is checked before any port opens."""
        self._check_client_ca()
        made = [self._endpoint(reactor, listen) for listen in self.endpoint_strings]
        ports = []
        for listen, endpoint in zip(self.endpoint_strings, made, strict=True):
            listening: IListeningPort = await Deferred.asFuture(
                endpoint.listen(self.factory), asyncio.get_running_loop()
            )
            self._ports.append(listening)
            ports.append(_port_of(listening.getHost()))
            log.info("%s receiver listening on %s (port %d)", self.name, listen, ports[-1])
        return ports

    def _check_client_ca(self) -> None:
        """A client CA needs an ``ssl:`` port to verify devices on."""
        tls = any(parse_endpoint(listen).kind == "ssl" for listen in self.endpoint_strings)
        if self.client_ca is not None and not tls:
            named = ", ".join(repr(listen) for listen in self.endpoint_strings)
            raise TLSError(f"client_ca needs an ssl: listen string with a privateKey, not {named}")

    def _endpoint(self, reactor: IReactorCore, listen: str) -> IStreamServerEndpoint:
        """``listen``'s endpoint; with a client CA, an ``ssl:`` one verifies devices."""
        if self.client_ca is not None and parse_endpoint(listen).kind == "ssl":
            return verifying_endpoint(reactor, listen, self.client_ca)
        return endpoints.serverFromString(reactor, with_backlog(listen))

    @property
    def listening(self) -> bool:
        return bool(self._ports)

    async def stop(self) -> None:
        """Stop accepting, then close the devices' connections (their sessions end cleanly)."""
        while self._ports:
            await Deferred.asFuture(
                self._ports.pop().stopListening(),  # type: ignore[arg-type]
                asyncio.get_running_loop(),
            )
        self.factory.close_all()
