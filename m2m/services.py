"""What ``m2m serve`` runs in one process: receivers, workers and web (and the sync service
of an edge site or of a cloud with sites), started and stopped in order.

Start: the operations port (metrics and health, when ``metrics.listen`` is set), Cassandra,
the publisher, the workers' consumers (and the sync service's: at a site, with its
publisher to the cloud's nsqd and its readers of the journal and of the cloud's queue for
the site; at the cloud, its reader of the sites' changes and of the journal), then the
receivers' listening ports (and their ``receivers`` control consumer, on a channel of this
receiver's own). Each registers its readiness check. Stop, on SIGTERM/SIGINT: stop
accepting devices and close their connections, let the consumers finish what they hold,
flush everything accepted to nsqd, then disconnect.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import socket
import uuid
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorCore

from m2m.bus import topics
from m2m.bus.channels import host_in_channel_name
from m2m.bus.consumer import Consumer, Handler
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.config import Config, NsqConfig
from m2m.endpoints import parse_endpoint
from m2m.errors import M2MError
from m2m.metrics import BusCollector, follow_bus_depths, unwatch, watch_bus
from m2m.operations import Check, Operations
from m2m.receivers.admission import Admission
from m2m.receivers.alip.protocol import ALIPProtocol
from m2m.receivers.connections import Connections
from m2m.receivers.m2mp.protocol import M2MPProtocol
from m2m.receivers.server import DeviceProtocol, DeviceServerFactory, ReceiverService
from m2m.receivers.session import ReceiverContext
from m2m.registry.device import Devices
from m2m.registry.firmware import Firmwares
from m2m.sync.check import SERVICE_CHECKS, CloudChecker, SiteChecker, keep_checking
from m2m.sync.forwarder import Pace, RecordForwarder
from m2m.sync.registry_link import CloudLink, JournalShipper, SiteLink, by_call, down_topic
from m2m.sync.status import SYNC_CHANNEL, report_status
from m2m.timeseries import TimeSeries
from m2m.web.service import WebService
from m2m.workers.converter import ConverterWorker
from m2m.workers.storage import StorageWorker

log = logging.getLogger(__name__)

RECEIVERS = ("m2mp", "alip")
WORKERS = ("converter", "storage")
SYNC = "sync"
SERVICE_NAMES = (*RECEIVERS, *WORKERS, "web", SYNC)
FLUSH_TIMEOUT = 30.0
CASSANDRA_PROBE = "SELECT release_version FROM system.local"
"""What readiness asks Cassandra: the cheapest question a node answers itself."""

CONVERTER_CHANNEL = "converter"
STORAGE_CHANNEL = "storage"
EVENTS_DRAIN_CHANNEL = "drain"
"""``events`` is a live feed: a message reaches the channels that exist when it is
published, and no more. nsqd keeps every message of a topic without a channel (for the
first one to come), so the receivers, who publish ``events``, read it on this channel and
let go of everything: the topic never holds what nobody asked for. Whoever wants every
event (an audit, an integration) reads on a channel of its own, which nsqd then keeps
for it; ``m2m bus stats`` flags any that nobody reads."""


def default_services(config: Config) -> tuple[str, ...]:
    """What ``m2m serve`` runs unless told: everything, the sync service if it is a site's
    (``sync.upstream`` set) or a cloud's with sites (``sync.sites``)."""
    has_sync = config.sync.upstream is not None or bool(config.sync.sites)
    return tuple(name for name in SERVICE_NAMES if name != SYNC or has_sync)


def _listen_port(listen: str) -> str:
    """The port ``listen`` names, or (a unix socket, …) a short hash of the whole string."""
    port = parse_endpoint(listen).port
    return str(port) if port is not None else hashlib.sha1(listen.encode()).hexdigest()[:8]


PROTOCOLS: dict[str, type[DeviceProtocol]] = {"m2mp": M2MPProtocol, "alip": ALIPProtocol}


@dataclass
class Services:
    config: Config
    names: tuple[str, ...]
    reactor: IReactorCore
    ports: dict[str, int] = field(default_factory=dict)
    """The TCP port each service listens on, once started: ``m2mp``, ``alip`` (the first
    of their ``listen`` endpoints), ``web``, ``metrics``; a receiver's further endpoints
    as ``m2mp.1``, ``m2mp.2``… in their order."""
    _database: Database | None = None
    _publisher: Publisher | None = None
    _consumers: list[Consumer] = field(default_factory=list)
    _receivers: list[ReceiverService] = field(default_factory=list)
    _web: WebService | None = None
    _heartbeat: asyncio.Task[None] | None = None
    _operations: Operations | None = None
    _bus_metrics: BusCollector | None = None
    _bus_depths: asyncio.Task[None] | None = None
    _upstream: Publisher | None = None
    """The sync service's, to the cloud's nsqd."""
    _sync_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.names) - set(SERVICE_NAMES)
        if unknown or not self.names:
            raise M2MError(
                f"unknown service(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                f"choose among {', '.join(SERVICE_NAMES)}"
            )
        if SYNC in self.names and not (self.config.sync.upstream or self.config.sync.sites):
            raise M2MError(
                "the sync service needs sync.upstream (at a site: the cloud platform's nsqd)"
                " or sync.sites (at the cloud: the sites it serves)"
            )

    @property
    def channel(self) -> str:
        """This receiver's own channel on the ``receivers`` topic: its host and ports.

        Not ephemeral: with nsqd's memory queue off (durability), an ephemeral channel has
        no queue at all and drops messages that arrive while its consumer is busy. So the
        channel outlives the process; named by host and ports, it is the one the receiver
        takes up again when it restarts (skipping what was sent before, see Connections).
        A receiver listening on several endpoints is named by its first.
        """
        ports = [_listen_port(getattr(self.config.receivers, name).endpoints[0])
                 for name in RECEIVERS if name in self.names]  # fmt: skip
        return f"receiver-{host_in_channel_name()}-{'-'.join(ports)}"

    async def start(self) -> None:
        config = self.config
        if config.metrics.listen is not None:
            self._operations = Operations(config.metrics.listen)
            self.ports["metrics"] = await self._operations.start()
        self._database = await asyncio.to_thread(Database.connect, config.cassandra)
        self._publisher = Publisher(config.nsq)
        self._publisher.start()
        self._bus_metrics = watch_bus(self._publisher, self._consumers)
        self._check("cassandra", self._cassandra_answers)
        self._check("nsqd", self._nsqd_connected)
        timeseries = TimeSeries(self._database)
        if "storage" in self.names:
            worker = StorageWorker(self._database, timeseries)
            self._consume(topics.STORAGE, STORAGE_CHANNEL, worker.handle)
        if "converter" in self.names:
            converter = ConverterWorker(self._publisher)
            self._consume(topics.CONVERTER_M2MP, CONVERTER_CHANNEL, converter.handle)
        if SYNC in self.names:
            self._start_sync()
        receivers = [name for name in self.names if name in RECEIVERS]
        if receivers:
            await self._start_receivers(receivers)
        if "web" in self.names:
            self._web = WebService(config, self._database, self._publisher)
            self.ports["web"] = await self._web.start()
            for topic, channel, handler in self._web.subscriptions():
                self._consume(topic, channel, handler)
            self._check("web", self._web_serving)
            await self._web.forget_abandoned_channels()
        # What start-up made (the driver's metadata, prepared statements, the app) lives
        # as long as the process: out of the collector's sight, full collections cost a
        # fraction (a fleet page's API call takes a third less time).
        gc.collect()
        gc.freeze()
        if self._operations is not None:
            self._operations.started = True
            self._bus_depths = asyncio.get_running_loop().create_task(
                follow_bus_depths(config.nsq, self._consumers)
            )
        log.info("serving: %s", ", ".join(self.names))

    def _check(self, name: str, check: Check) -> None:
        if self._operations is not None:
            self._operations.add_check(name, check)

    async def _cassandra_answers(self) -> str | None:
        assert self._database is not None
        await self._database.execute(CASSANDRA_PROBE)
        return None

    async def _nsqd_connected(self) -> str | None:
        assert self._publisher is not None
        if not self._publisher.connected:
            return "not connected to nsqd (publisher)"
        apart = [f"{c.topic}/{c.channel}" for c in self._consumers if not c.connected]
        return f"not connected to nsqd: consumer of {', '.join(apart)}" if apart else None

    async def _receivers_listening(self) -> str | None:
        idle = [receiver.name for receiver in self._receivers if not receiver.listening]
        return f"not listening: {', '.join(idle)}" if idle else None

    async def _web_serving(self) -> str | None:
        assert self._web is not None
        return None if self._web.serving else "the HTTP server stopped"

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
        self._consume(topics.EVENTS, EVENTS_DRAIN_CHANNEL, None)
        for name in names:
            listening = getattr(self.config.receivers, name)
            factory = DeviceServerFactory(context, PROTOCOLS[name])
            service = ReceiverService(name, listening.endpoints, factory, listening.client_ca)
            self._receivers.append(service)  # stopped too if it opens some ports, not all
            for index, port in enumerate(await service.start(self.reactor)):
                self.ports[f"{name}.{index}" if index else name] = port
                self._publisher.publish(
                    Envelope.make(
                        topics.EVENTS, topics.NEW_RECEIVER, context.address,
                        tcp_port=port, source=name, host=context.host,
                    )
                )  # fmt: skip
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(context))
        self._check("receivers", self._receivers_listening)

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

    def _start_sync(self) -> None:
        """A site's link up (records, registry changes, checks), a cloud's to its sites."""
        assert self._database is not None and self._publisher is not None
        sync = self.config.sync
        loop = asyncio.get_running_loop()
        if sync.upstream is not None:
            self._upstream = Publisher(sync.upstream)
            self._upstream.start()
            forwarder = RecordForwarder(self._upstream, Pace(sync.catch_up_rate))
            self._consume(topics.STORAGE, SYNC_CHANNEL, forwarder.handle)
            site = SiteLink(self._database, sync, self._upstream, self._publisher)
            checker = SiteChecker(self._database, sync, site, SERVICE_CHECKS)
            self._consume(down_topic(sync.site), SYNC_CHANNEL, by_call({
                topics.REGISTRY_CHANGE: site.apply}), sync.upstream)  # fmt: skip
            self._sync_tasks += [
                loop.create_task(report_status(self._database, forwarder, sync)),
                loop.create_task(JournalShipper(self._database, "up", site.send_up).run()),
                loop.create_task(keep_checking(checker, self._upstream, sync.check_interval)),
            ]
        if sync.sites:
            cloud = CloudLink(self._database, sync, self._publisher)
            answers = CloudChecker(self._database, sync, self._publisher)
            self._consume(topics.SYNC_UP, SYNC_CHANNEL, by_call({
                topics.REGISTRY_CHANGE: cloud.apply,
                topics.CHECK_SUMMARY: answers.answer,
                topics.CHECK_BUCKETS: answers.answer,
                topics.CHECK_DEVICES: answers.answer,
            }))  # fmt: skip
            self._sync_tasks.append(
                loop.create_task(JournalShipper(self._database, "down", cloud.send_down).run())
            )

    def _consume(
        self, topic: str, channel: str, handler: Handler | None, nsq: NsqConfig | None = None
    ) -> None:
        """Consume from this platform's nsqd, or from ``nsq`` (a site's: the cloud's)."""
        assert self._publisher is not None
        consumer = Consumer(topic, channel, handler, nsq or self.config.nsq, self._publisher)
        consumer.start()
        self._consumers.append(consumer)

    async def stop(self) -> None:
        for task in (self._heartbeat, self._bus_depths, *self._sync_tasks):
            if task is not None:
                task.cancel()
        if self._web is not None:
            await self._web.stop()
        for receiver in self._receivers:
            await receiver.stop()
        await asyncio.sleep(0)  # let the closed connections' last steps run
        for consumer in self._consumers:
            await consumer.close()
        if self._web is not None:
            await self._web.forget_channels()
        if self._upstream is not None:
            # What was not acknowledged stays in the edge's queue: sent again next time.
            self._upstream.close()
        if self._publisher is not None:
            if not await self._publisher.flush(FLUSH_TIMEOUT):
                log.error(
                    "%d message(s) not acknowledged by nsqd at shutdown",
                    self._publisher.buffered,
                )
            self._publisher.close()
        if self._database is not None:
            self._database.close()
        if self._bus_metrics is not None:
            unwatch(self._bus_metrics)
        if self._operations is not None:
            await self._operations.stop()
        log.info("stopped")
