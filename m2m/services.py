"""What ``m2m serve`` runs in one process: receivers, workers and web, started and stopped in order.

Start: Cassandra, the publisher, the workers' consumers, then the receivers' listening
ports (and their ``receivers`` control consumer, on a channel of this receiver's own).
Stop, on SIGTERM/SIGINT: stop accepting devices and close their connections, let the
consumers finish what they hold, flush everything accepted to nsqd, then disconnect.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import re
import socket
import uuid
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorCore

from m2m.bus import topics
from m2m.bus.consumer import Consumer, Handler
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.config import Config
from m2m.errors import M2MError
from m2m.receivers.admission import Admission
from m2m.receivers.alip.protocol import ALIPProtocol
from m2m.receivers.connections import Connections
from m2m.receivers.m2mp.protocol import M2MPProtocol
from m2m.receivers.server import DeviceProtocol, DeviceServerFactory, ReceiverService
from m2m.receivers.session import ReceiverContext
from m2m.registry.device import Devices
from m2m.registry.firmware import Firmwares
from m2m.timeseries import TimeSeries
from m2m.web.service import WebService
from m2m.workers.converter import ConverterWorker
from m2m.workers.storage import StorageWorker

log = logging.getLogger(__name__)

RECEIVERS = ("m2mp", "alip")
WORKERS = ("converter", "storage")
SERVICE_NAMES = (*RECEIVERS, *WORKERS, "web")
FLUSH_TIMEOUT = 30.0

CONVERTER_CHANNEL = "converter"
STORAGE_CHANNEL = "storage"
_ENDPOINT_PORT = re.compile(r"[a-z0-9]+:(?:port=)?(\d+)(?::|$)")
"""The port of a Twisted server endpoint string: ``tcp:3010:…``, ``ssl:port=3011:…``."""


def _listen_port(listen: str) -> str:
    """The port ``listen`` names, or (a unix socket, …) a short hash of the whole string."""
    found = _ENDPOINT_PORT.match(listen)
    return found.group(1) if found else hashlib.sha1(listen.encode()).hexdigest()[:8]


PROTOCOLS: dict[str, type[DeviceProtocol]] = {"m2mp": M2MPProtocol, "alip": ALIPProtocol}


@dataclass
class Services:
    config: Config
    names: tuple[str, ...]
    reactor: IReactorCore
    ports: dict[str, int] = field(default_factory=dict)
    """The TCP port each receiver listens on, once started."""
    _database: Database | None = None
    _publisher: Publisher | None = None
    _consumers: list[Consumer] = field(default_factory=list)
    _receivers: list[ReceiverService] = field(default_factory=list)
    _web: WebService | None = None
    _heartbeat: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.names) - set(SERVICE_NAMES)
        if unknown or not self.names:
            raise M2MError(
                f"unknown service(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                f"choose among {', '.join(SERVICE_NAMES)}"
            )

    @property
    def channel(self) -> str:
        """This receiver's own channel on the ``receivers`` topic: its host and ports.

        Not ephemeral: with nsqd's memory queue off (durability), an ephemeral channel has
        no queue at all and drops messages that arrive while its consumer is busy. So the
        channel outlives the process; named by host and ports, it is the one the receiver
        takes up again when it restarts (skipping what was sent before, see Connections).
        """
        ports = [_listen_port(getattr(self.config.receivers, name).listen) for name in RECEIVERS
                 if name in self.names]  # fmt: skip
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40]
        return f"receiver-{host}-{'-'.join(ports)}"

    async def start(self) -> None:
        config = self.config
        self._database = await asyncio.to_thread(Database.connect, config.cassandra)
        self._publisher = Publisher(config.nsq)
        self._publisher.start()
        timeseries = TimeSeries(self._database)
        if "storage" in self.names:
            worker = StorageWorker(self._database, timeseries)
            self._consume(topics.STORAGE, STORAGE_CHANNEL, worker.handle)
        if "converter" in self.names:
            converter = ConverterWorker(self._publisher)
            self._consume(topics.CONVERTER_M2MP, CONVERTER_CHANNEL, converter.handle)
        receivers = [name for name in self.names if name in RECEIVERS]
        if receivers:
            await self._start_receivers(receivers)
        if "web" in self.names:
            self._web = WebService(config, self._database, self._publisher)
            self.ports["web"] = await self._web.start()
            for topic, channel, handler in self._web.subscriptions():
                self._consume(topic, channel, handler)
        # What start-up made (the driver's metadata, prepared statements, the app) lives
        # as long as the process: out of the collector's sight, full collections cost a
        # fraction (a fleet page's API call takes a third less time).
        gc.collect()
        gc.freeze()
        log.info("serving: %s", ", ".join(self.names))

    async def _start_receivers(self, names: list[str]) -> None:
        assert self._database is not None and self._publisher is not None
        connections = Connections()
        context = ReceiverContext(
            publisher=self._publisher,
            devices=Devices(self._database),
            timeseries=TimeSeries(self._database),
            firmwares=Firmwares(self._database),
            connections=connections,
            timing=self.config.receivers.timing,
            limits=self.config.receivers.limits,
            admission=Admission(self.config.receivers.limits),
            enrollment=self.config.receivers.enrollment,
            ack=self.config.receivers.ack,
            address=f"{topics.RECEIVERS}/{self.channel}",
            host=socket.gethostname(),
            instance=uuid.uuid4().hex[:16],
        )
        self._consume(topics.RECEIVERS, self.channel, connections.control)
        for name in names:
            listen = getattr(self.config.receivers, name).listen
            service = ReceiverService(name, listen, DeviceServerFactory(context, PROTOCOLS[name]))
            self.ports[name] = await service.start(self.reactor)
            self._receivers.append(service)
            self._publisher.publish(
                Envelope.make(
                    topics.EVENTS, topics.NEW_RECEIVER, context.address,
                    tcp_port=self.ports[name], source=name, host=context.host,
                )
            )  # fmt: skip
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(context))

    async def _beat(self, context: ReceiverContext) -> None:
        """Say on ``events`` that this receiver process is alive, every heartbeat interval."""
        assert self._publisher is not None
        while True:
            self._publisher.publish(
                Envelope.make(
                    topics.EVENTS, topics.RECEIVER_ALIVE, context.address,
                    receiver=context.instance, host=context.host,
                    connections=len(context.connections),
                )
            )  # fmt: skip
            await asyncio.sleep(self.config.receivers.timing.heartbeat_interval)

    def _consume(self, topic: str, channel: str, handler: Handler) -> None:
        assert self._publisher is not None
        consumer = Consumer(topic, channel, handler, self.config.nsq, self._publisher)
        consumer.start()
        self._consumers.append(consumer)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._web is not None:
            await self._web.stop()
        for receiver in self._receivers:
            await receiver.stop()
        await asyncio.sleep(0)  # let the closed connections' last steps run
        for consumer in self._consumers:
            await consumer.close()
        if self._web is not None:
            await self._web.forget_channels()
        if self._publisher is not None:
            if not await self._publisher.flush(FLUSH_TIMEOUT):
                log.error(
                    "%d message(s) not acknowledged by nsqd at shutdown",
                    self._publisher.buffered,
                )
            self._publisher.close()
        if self._database is not None:
            self._database.close()
        log.info("stopped")
