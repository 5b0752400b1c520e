"""Registry changes, both ways: each platform's journal read and sent, the other's applied.

A site sends the changes of its devices' nodes up, to the cloud's ``sync-up`` topic; the
cloud sends the changes of a site's devices down, to ``sync-down-<site>`` on its own nsqd,
a durable queue the site reads over the uplink (it fills while the site is offline).
Each change is a node's cells with their write times (:mod:`m2m.sync.cells`), applied
with those times: the later change wins on both sides, whatever order they arrive in.

Which site a device belongs to is the cloud's ``site`` value on the device's node: the
site its changes last came from. A device that shows up at another site (or moved there)
gets its whole subtree sent there, so it is served with its current settings.

What a platform applies from the other side it writes without a journal entry, so it is
not sent back. A site pushes applied settings and commands to the device at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from m2m.bus import topics
from m2m.bus.consumer import Handler
from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.bus.publisher import Publisher
from m2m.bus.push import PushNotSentError, push_to_device
from m2m.cassandra import Database
from m2m.config import SyncConfig, SyncRules
from m2m.errors import Unavailable
from m2m.registry.device import DEVICES, Devices, device_id_for
from m2m.registry.domain import DEFAULT_DOMAIN, Domains
from m2m.registry.journal import JournalEntry, JournalReader
from m2m.registry.node import RegistryNode
from m2m.sync.cells import NodeCells, file_blocks, merge_cells, read_cells
from m2m.sync.rules import SyncedNode, Way, local_values, synced_node

log = logging.getLogger(__name__)

CURSOR_NODE = "/.sync/journal/"
"""Where the service keeps how far it has sent the journal on, per way (``up/``,
``down/``: a platform that is both a site and a cloud sends both), in value ``since``."""
POLL_INTERVAL = 0.5
"""Seconds between two reads of the journal."""
RETRY_INTERVAL = 1.0
CURSOR_SAVE_INTERVAL = 60.0
"""Seconds of journal read without a change to send before the position is saved."""
SEND_TIMEOUT = 10.0
Change = tuple[SyncedNode, NodeCells]
Send = Callable[[list[Change]], Awaitable[None]]


def by_call(handlers: Mapping[str, Callable[[Envelope], Awaitable[None]]]) -> Handler:
    """A consumer's handler that hands each message to the handler of its call."""

    async def handle(envelope: Envelope) -> None:
        handler = handlers.get(envelope.call)
        if handler is None:
            raise InvalidMessage(f"call {envelope.call!r:.60} is none of {', '.join(handlers)}")
        await handler(envelope)

    return handle


def down_topic(site: str) -> str:
    return f"{topics.SYNC_DOWN}{site}"


def change_message(to: str, site: str, cells: NodeCells) -> Envelope:
    return Envelope.make(to, topics.REGISTRY_CHANGE, f"sync;site={site}", site=site,
                         **cells.to_fields())  # fmt: skip


async def changes_of(database: Database, entries: Iterable[JournalEntry]) -> list[Change]:
    """The synced nodes the entries name, as cells to send (removals included)."""
    removals: dict[str, NodeCells] = {}
    for entry in entries:
        if synced_node(entry.path) is None:
            continue
        cells = removals.setdefault(entry.path, NodeCells(entry.path))
        for name in entry.removed:
            cells.removed[name] = max(cells.removed.get(name, 0), entry.stamp)
        if entry.erased:
            cells.erased = max(cells.erased or 0, entry.stamp)
    present = await read_cells(database, removals)
    changes: list[Change] = []
    for path, removal in removals.items():
        cells = present[path]
        cells.removed = {
            name: at for name, at in removal.removed.items() if name not in cells.values
        }
        cells.erased = removal.erased
        node = synced_node(path)
        assert node is not None
        if cells.is_complete_file:
            changes.extend((node, block) for block in await file_blocks(database, cells))
        else:
            changes.append((node, cells.without(local_values(path))))
    return changes


class JournalShipper:
    """Reads this platform's journal and sends its synced changes on, none lost.

    Changes are sent in the order written; what could not be sent (the other side's nsqd
    unreachable) is read again and sent later. How far the journal was sent is kept in
    the registry, so a restarted service starts where it stopped.
    """

    def __init__(self, database: Database, way: Way, send: Send) -> None:
        self._database = database
        self._send = send
        self._cursor = RegistryNode(database, f"{CURSOR_NODE}{way}/")

    async def run(self) -> None:
        since = await self._cursor.value("since")
        reader = JournalReader(self._database, float(since) if since else time.time())
        saved, failing = reader.since, False
        while True:
            entries: list[JournalEntry] = []
            try:
                entries = await reader.read()
                changes = await changes_of(self._database, entries)
                if changes:
                    await self._send(changes)
                reader.done(entries)
                if changes or reader.since - saved > CURSOR_SAVE_INTERVAL:
                    await self._cursor.set_values({"since": repr(reader.since)})
                    saved = reader.since
            except Exception as exc:  # the journal keeps them: try again
                if not failing:
                    log.warning("registry changes not sent yet (%s); trying again", exc,
                                exc_info=not isinstance(exc, Unavailable))  # fmt: skip
                failing = True
                reader.retry(entries)
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            if failing:
                log.info("registry changes sent again")
                failing = False
            await asyncio.sleep(POLL_INTERVAL)


@dataclass
class SiteLink:
    """A site's side: its changes up, the cloud's applied (and pushed to the devices)."""

    database: Database
    config: SyncConfig
    upstream: Publisher
    """To the cloud's nsqd."""
    local: Publisher
    """To this site's nsqd: settings and commands pushed to the receivers."""

    async def send_up(self, changes: list[Change]) -> None:
        rules = self.config.rules
        carried = [node.carried(cells, rules, "up") for node, cells in changes]
        await asyncio.gather(*(
            self.send_message(change_message(topics.SYNC_UP, self.config.site, cells))
            for cells in carried if cells is not None
        ))  # fmt: skip

    async def send_message(self, envelope: Envelope) -> None:
        """Publish on the cloud's nsqd; :class:`Unavailable` if it is not reachable."""
        if not self.upstream.connected:
            raise Unavailable("the cloud's nsqd is not connected")
        await self.upstream.deliver(envelope, timeout=SEND_TIMEOUT)

    async def apply(self, envelope: Envelope) -> None:
        """A change from the cloud, if its kind comes down."""
        merged = await merge_change(self.database, envelope, self.config.rules, "down")
        if merged is None:
            return
        node, path, answer = merged
        if answer is not None:
            await self.send_up([(node, answer)])
        call = _PUSHED.get(path.rsplit("/", 2)[-2])
        if call is not None and node.device_id is not None:
            try:
                await push_to_device(
                    self.local, node.device_id, call, f"sync;site={self.config.site}"
                )
            except PushNotSentError as exc:  # the device gets them when it next connects
                log.warning("device %s not told of the change: %s", node.device_id, exc)


_PUSHED = {"settings-to-send": topics.SEND_SETTINGS, "commands": topics.SEND_COMMANDS}
"""The nodes whose changes a site pushes to the device at once, and the call that does."""


@dataclass
class CloudLink:
    """The cloud's side: each site's changes applied, the changes of its devices sent down."""

    database: Database
    config: SyncConfig
    publisher: Publisher
    """To the cloud's own nsqd, where each site's queue is."""

    async def send_down(self, changes: list[Change]) -> None:
        rules = self.config.rules
        wanted = [(node, node.carried(cells, rules, "down")) for node, cells in changes]
        sites = await self._sites_of({node.device_id for node, _ in wanted if node.device_id})
        sending: list[Awaitable[None]] = []
        for node, cells in wanted:
            if cells is None:
                continue
            targets = self.config.sites if node.device_id is None else [sites[node.device_id]]
            sending.extend(self._send(site, cells) for site in targets if site)
        await asyncio.gather(*sending)

    def _send(self, site: str, cells: NodeCells) -> Awaitable[None]:
        message = change_message(down_topic(site), site, cells)
        return self.publisher.deliver(message, timeout=SEND_TIMEOUT)

    async def _sites_of(self, device_ids: Iterable[str]) -> Mapping[str, str | None]:
        """Each device's site, its nodes read a hundred to a request (``read_cells``)."""
        nodes = await read_cells(self.database, (f"{DEVICES}{i}/" for i in device_ids))
        return {
            path[len(DEVICES) : -1]: cells.values["site"][0] if "site" in cells.values else None
            for path, cells in nodes.items()
        }

    async def apply(self, envelope: Envelope) -> None:
        """A change from a site, if its kind goes up; its device, if it is a device's, now
        belongs to the site."""
        site = envelope.fields.get("site")
        if site not in self.config.sites:
            raise InvalidMessage(f"a change from {site!r:.60}, not a site of this platform")
        merged = await merge_change(self.database, envelope, self.config.rules, "up")
        if merged is None:
            return
        node, _, answer = merged
        down = None if answer is None else node.carried(answer, self.config.rules, "down")
        if down is not None:
            await self._send(site, down)
        if node.device_id is not None:
            await self.join(node.device_id, site)

    async def join(self, device_id: str, site: str) -> None:
        """Make the device the site's, if it is not: the site gets all of it."""
        device_node = RegistryNode(self.database, f"{DEVICES}{device_id}/")
        values = await device_node.values()
        if "ident" in values and "domain" not in values:  # new here: the default domain
            devices = Devices(self.database)
            device = await devices.by_id(device_id)
            if device is not None:
                await devices.move(
                    device, await Domains(self.database).get_or_create(DEFAULT_DOMAIN)
                )
        if values.get("site") == site:
            return
        await device_node.set_values({"site": site})
        previous = values.get("site")
        log.info("device %s now at site %s (was %s)", device_id, site, previous or "none")
        subtree = await read_cells(self.database, await device_paths(self.database, device_id))
        rules = self.config.rules
        carried = [
            synced_or_refused(path).carried(cells.without(local_values(path)), rules, "down")
            for path, cells in subtree.items()
            if not cells.empty
        ]
        sending = [self._send(site, cells) for cells in carried if cells is not None]
        if previous in self.config.sites:  # it left: its old site learns where it went
            sending.append(
                self._send(
                    previous, subtree[device_node.path].without(local_values(device_node.path))
                )
            )
        await asyncio.gather(*sending)


async def device_paths(database: Database, device_id: str) -> list[str]:
    """The synced nodes of a device: its node, its children, its sensors, its by-ident."""
    node = RegistryNode(database, f"{DEVICES}{device_id}/")
    ident = await node.value("ident")
    paths = [node.path, *(child.path for child in await node.children(include_hidden=True))]
    sensors = await node.child("listed-sensors").children(include_hidden=True)
    paths.extend(sensor.path for sensor in sensors)
    if ident is not None and device_id_for(ident) == device_id:
        paths.append(f"/device/by-ident/{ident}/")
    return paths


class Merged(NamedTuple):
    node: SyncedNode
    path: str
    answer: NodeCells | None
    """What won here where it was not what was sent (None: all of it took)."""


async def merge_change(
    database: Database, envelope: Envelope, rules: SyncRules, way: Way
) -> Merged | None:
    """Merge the change a message carries, what of it comes ``way`` (None: nothing does)."""
    cells = NodeCells.of_fields(envelope.fields)
    node = synced_or_refused(cells.path)
    carried = node.carried(cells.without(local_values(cells.path)), rules, way)
    if carried is None:
        return None
    return Merged(node, cells.path, await merge_cells(database, carried))


def synced_or_refused(path: str) -> SyncedNode:
    node = synced_node(path)
    if node is None:
        raise InvalidMessage(f"registry node {path} is not synced")
    return node
