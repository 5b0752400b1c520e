"""Anti-entropy: a site's registry and the cloud's copy of it, compared by hashes, repaired.

Each side hashes what it holds of the site's devices into a Merkle tree: a node's hash
covers its cells and their write times, a device's its nodes', and a bucket's (the first
two hex digits of the device ids: 256 buckets) its devices'. The site asks the cloud for
its bucket hashes and reads its own registry meanwhile; it then asks for the device
hashes of the buckets that differ (the cloud kept them from its read), and for the nodes
of the devices that differ, which it compares cell by cell. When nothing differs, a
check costs each side one read of its registry, the two at the same time, and the bus a
message each way.

Repairing merges by the rule every change follows (last writer wins, cell by cell): the
site sends its cells of the differing devices up and merges the cloud's; what lost on
either side comes back as an answer (:func:`~m2m.sync.cells.merge_cells`). A node deleted
behind the sync's back (raw CQL) is deleted on both sides if that was the latest change,
and a value changed so wins likewise.

The conversation runs on the cloud's nsqd: requests on ``sync-up``, answers on
``sync-check-<site>``, each naming the request it answers. The cloud
answers outside the consumer's handler, so a long read holds no message past nsqd's
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from m2m.bus import topics
from m2m.bus.consumer import Consumer
from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.config import SyncConfig
from m2m.errors import Unavailable
from m2m.sync.cells import CELL_COLUMNS, NodeCells, cells_of_row, merge_cells, read_cells
from m2m.sync.registry_link import Change, SiteLink, device_paths, synced_or_refused
from m2m.sync.rules import local_values, synced_node

log = logging.getLogger(__name__)

SERVICE_CHECKS = "check-service"
CLI_CHECKS = "check-cli"
"""The channels of ``sync-check-<site>`` the sync service's checks and ``m2m sync check``
read their answers on: every answer reaches both, each takes its own."""
ANSWER_TIMEOUT = 120.0
"""Seconds the cloud has to answer one request of a check."""
ASK_AGAIN_AFTER = 10.0
"""Seconds without an answer after which a request is sent again."""
DEVICES_PER_MESSAGE = 5000
NODES_PER_MESSAGE = 200
CHECK_RETRY = 10.0
"""Seconds before a check that failed is tried again."""
_SCAN = f"SELECT {CELL_COLUMNS} FROM registrynode"
_SCAN_PAGE = 5000


class CheckFailed(Unavailable):
    """The cloud did not answer in time (the uplink is down, or its sync service is)."""


def check_topic(site: str) -> str:
    return f"{topics.SYNC_CHECK}{site}"


@dataclass
class SiteTree:
    """What one side holds of a site's devices: each device's nodes, as cells."""

    devices: dict[str, dict[str, NodeCells]] = field(default_factory=dict)

    def device_digest(self, device_id: str) -> str:
        hashing = hashlib.blake2b(digest_size=16)
        for _, cells in sorted(self.devices[device_id].items()):
            hashing.update(cells.digest())
        return hashing.hexdigest()

    def device_digests(self, buckets: Iterable[str] | None = None) -> dict[str, str]:
        wanted = None if buckets is None else set(buckets)
        return {
            device_id: self.device_digest(device_id)
            for device_id in self.devices
            if wanted is None or device_id[:2] in wanted
        }

    def bucket_digests(self) -> dict[str, str]:
        return bucket_digests(self.device_digests())


def bucket_digests(device_digests: dict[str, str]) -> dict[str, str]:
    """The hash of each bucket of devices (the first two hex digits of their ids)."""
    by_bucket: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for device_id, digest in device_digests.items():
        by_bucket[device_id[:2]].append((device_id, digest))
    digests = {}
    for bucket, devices in by_bucket.items():
        hashing = hashlib.blake2b(digest_size=16)
        for device_id, digest in sorted(devices):
            hashing.update(f"{device_id}={digest};".encode())
        digests[bucket] = hashing.hexdigest()
    return digests


async def site_tree(database: Database, config: SyncConfig, site: str, at_cloud: bool) -> SiteTree:
    """The synced nodes of the site's devices this platform holds, read in one scan."""
    devices: defaultdict[str, dict[str, NodeCells]] = defaultdict(dict)
    async for rows in database.pages(_SCAN, page_size=_SCAN_PAGE):
        for row in rows:
            node = synced_node(row.path)
            if node is not None and node.device_id is not None:
                cells = _compared(cells_of_row(row), config)
                if cells is not None:
                    devices[node.device_id][row.path] = cells
    return SiteTree({
        device_id: nodes for device_id, nodes in devices.items()
        if _belongs(device_id, nodes, site, at_cloud)
    })  # fmt: skip


def _compared(cells: NodeCells, config: SyncConfig) -> NodeCells | None:
    """What a check compares of a synced node: its cells but the local values, if any."""
    node = synced_node(cells.path)
    if node is None or getattr(config.rules, node.kind) == "none":
        return None
    kept = cells.without(local_values(cells.path))
    return None if kept.empty else kept


def _belongs(device_id: str, nodes: dict[str, NodeCells], site: str, at_cloud: bool) -> bool:
    """Whether the device is the site's: at the cloud, if its ``site`` is the site; at
    the site, unless it is known to be another's."""
    device_node = nodes.get(f"/device/{device_id}/")
    where = device_node.values.get("site", ("", 0))[0] if device_node else ""
    return where == site or (not at_cloud and where == "")


@dataclass
class CheckReport:
    devices: int
    """Devices of the site at the site."""
    cloud_devices: int
    differing_devices: list[str]
    differing_nodes: list[str]
    repaired: bool
    seconds: float

    @property
    def in_sync(self) -> bool:
        return not self.differing_devices

    def as_json(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "devices": self.devices,
            "cloud_devices": self.cloud_devices,
            "differing_devices": self.differing_devices,
            "differing_nodes": self.differing_nodes,
            "repaired": self.repaired,
            "seconds": round(self.seconds, 3),
        }


class SiteChecker:
    """The site's side of a check: asks the cloud, compares, repairs."""

    def __init__(
        self, database: Database, config: SyncConfig, link: SiteLink, channel: str
    ) -> None:
        self._database = database
        self._config = config
        self._link = link
        self._channel = channel
        """:data:`SERVICE_CHECKS` or :data:`CLI_CHECKS`."""
        self._waiting: dict[str, _Answer] = {}

    async def _answered(self, envelope: Envelope) -> None:
        """An answer of the cloud (``sync-check-<site>``). One to no request here is the
        other checker's, or one to a check that gave up: finished."""
        answer = self._waiting.get(str(envelope.fields.get("request")))
        if answer is not None:
            answer.add(envelope)

    async def check(self, repair: bool) -> CheckReport:
        """Compare the site's devices with the cloud's copy; repair what differs if asked.

        Raises :class:`CheckFailed` if the cloud does not answer in time.
        """
        upstream = self._config.upstream
        assert upstream is not None
        answers = Consumer(check_topic(self._config.site), self._channel, self._answered,
                           upstream, self._link.local)  # fmt: skip
        answers.start()
        try:
            return await self._check(repair)
        finally:
            await answers.close()

    async def _check(self, repair: bool) -> CheckReport:
        started = time.monotonic()
        check_id = uuid.uuid4().hex
        asked = asyncio.ensure_future(self._ask(check_id, topics.CHECK_SUMMARY))
        try:  # the cloud reads its registry while this side reads its own
            tree = await site_tree(self._database, self._config, self._config.site, at_cloud=False)
            (summary,) = await asked
        finally:
            asked.cancel()
        theirs, cloud_devices = summary.fields["buckets"], int(summary.fields["total"])
        ours = tree.bucket_digests()
        buckets = sorted(b for b in set(ours) | set(theirs) if ours.get(b) != theirs.get(b))
        differing: list[str] = []
        if buckets:
            cloud_digests: dict[str, str] = {}
            for part in await self._ask(check_id, topics.CHECK_BUCKETS, buckets=buckets):
                cloud_digests.update(part.fields["devices"])
            our_digests = tree.device_digests(buckets)
            differing = sorted(
                device_id
                for device_id in set(our_digests) | set(cloud_digests)
                if our_digests.get(device_id) != cloud_digests.get(device_id)
            )
        differing_nodes: list[str] = []
        if differing:
            cloud_nodes: dict[str, NodeCells] = {}
            for part in await self._ask(check_id, topics.CHECK_DEVICES, devices=differing):
                for fields in part.fields["nodes"]:
                    cells = NodeCells.of_fields(fields)
                    cloud_nodes[cells.path] = cells
            our_nodes = {
                path: cells
                for device_id in differing
                for path, cells in tree.devices.get(device_id, {}).items()
            }
            differing_nodes = sorted(
                path
                for path in set(our_nodes) | set(cloud_nodes)
                if _digest(our_nodes.get(path)) != _digest(cloud_nodes.get(path))
            )
            if repair:
                await self._repair(
                    [our_nodes[p] for p in differing_nodes if p in our_nodes],
                    [cloud_nodes[p] for p in differing_nodes if p in cloud_nodes],
                )
        return CheckReport(
            devices=len(tree.devices),
            cloud_devices=cloud_devices,
            differing_devices=differing,
            differing_nodes=differing_nodes,
            repaired=repair and bool(differing),
            seconds=time.monotonic() - started,
        )

    async def _repair(self, ours: list[NodeCells], theirs: list[NodeCells]) -> None:
        """Send the site's cells up; merge the cloud's here, sending up what won here."""
        rules = self._config.rules
        up: list[Change] = [(synced_or_refused(cells.path), cells) for cells in ours]
        for cells in theirs:
            node = synced_or_refused(cells.path)
            carried = node.carried(cells, rules, "down")
            answer = None if carried is None else await merge_cells(self._database, carried)
            if answer is not None:
                up.append((node, answer))
        await self._link.send_up(up)

    async def _ask(self, check_id: str, call: str, **fields: Any) -> list[Envelope]:
        """Send a request of the check up and wait for every part of its answer.

        The request goes again every :data:`ASK_AGAIN_AFTER` seconds without an answer:
        an answer published before this checker's channel existed (its first check) or
        taken by another checker is lost, and answering twice does no harm.
        """
        request_id = uuid.uuid4().hex
        answer = self._waiting[request_id] = _Answer()
        request = Envelope.make(
            topics.SYNC_UP, call, f"sync;site={self._config.site}",
            site=self._config.site, check=check_id, request=request_id, **fields,
        )  # fmt: skip
        deadline = time.monotonic() + ANSWER_TIMEOUT
        try:
            while time.monotonic() < deadline:
                await self._link.send_message(request)
                wait = min(ASK_AGAIN_AFTER, deadline - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(answer.complete), wait)
            raise CheckFailed(f"the cloud did not answer within {ANSWER_TIMEOUT:g} s")
        finally:
            del self._waiting[request_id]


async def keep_checking(checker: SiteChecker, upstream: Publisher, interval: float) -> None:
    """Check and repair once the uplink is up, after each reconnection, and every
    ``interval`` seconds while it stays up."""
    while True:
        while not upstream.connected:
            await asyncio.sleep(1)
        try:
            report = await checker.check(repair=True)
        except Exception as exc:  # tried again: the service goes on
            log.warning("registry check not done: %s", exc,
                        exc_info=not isinstance(exc, Unavailable))  # fmt: skip
            await asyncio.sleep(CHECK_RETRY)
            continue
        if report.in_sync:
            log.info("registry check: %d devices in sync with the cloud", report.devices)
        else:
            log.warning(
                "registry check: %d devices differed from the cloud's (%d nodes); repaired",
                len(report.differing_devices), len(report.differing_nodes),
            )  # fmt: skip
        deadline = time.monotonic() + interval
        while upstream.connected and time.monotonic() < deadline:
            await asyncio.sleep(1)


class _Answer:
    def __init__(self) -> None:
        self.parts: dict[int, Envelope] = {}
        self.complete: asyncio.Future[list[Envelope]] = asyncio.get_running_loop().create_future()

    def add(self, envelope: Envelope) -> None:
        self.parts[int(envelope.fields.get("part", 0))] = envelope
        if len(self.parts) == int(envelope.fields.get("parts", 1)) and not self.complete.done():
            self.complete.set_result([self.parts[index] for index in sorted(self.parts)])


def _digest(cells: NodeCells | None) -> bytes:
    return b"" if cells is None else cells.digest()


class CloudChecker:
    """The cloud's side of checks: answers each site's requests.

    A check's device hashes are kept from its first request to its next, for
    :data:`ANSWER_TIMEOUT` at most.
    """

    def __init__(self, database: Database, config: SyncConfig, publisher: Publisher) -> None:
        self._database = database
        self._config = config
        self._publisher = publisher
        self._digests: dict[str, tuple[float, dict[str, str]]] = {}
        """Each recent check's device hashes, and when they were read."""
        self._answering: set[asyncio.Task[None]] = set()

    async def answer(self, envelope: Envelope) -> None:
        """Take a request: it is answered in the background (a read of the registry may
        outlast nsqd's message timeout); one that fails leaves the site to give up."""
        site = envelope.fields.get("site")
        if site not in self._config.sites:
            raise InvalidMessage(f"a check from {site!r:.60}, not a site of this platform")
        task = asyncio.get_running_loop().create_task(self._answer(site, envelope))
        self._answering.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._answering.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a check's request not answered", exc_info=task.exception())

    async def _answer(self, site: str, envelope: Envelope) -> None:
        check_id = str(envelope.fields.get("check"))
        parts: list[dict[str, Any]]
        if envelope.call == topics.CHECK_SUMMARY:
            digests = await self._device_digests(site, check_id)
            parts = [{"buckets": bucket_digests(digests), "total": len(digests)}]
        elif envelope.call == topics.CHECK_BUCKETS:
            buckets = set(_strings(envelope.fields.get("buckets")))
            digests = await self._device_digests(site, check_id)
            wanted = [(device, digest) for device, digest in digests.items()
                      if device[:2] in buckets]  # fmt: skip
            parts = [{"devices": dict(wanted[i : i + DEVICES_PER_MESSAGE])}
                     for i in range(0, max(len(wanted), 1), DEVICES_PER_MESSAGE)]  # fmt: skip
        else:
            nodes = [
                cells.to_fields()
                for device_id in _strings(envelope.fields.get("devices"))
                for cells in (await self._device_nodes(device_id, site)).values()
            ]
            parts = [{"nodes": nodes[i : i + NODES_PER_MESSAGE]}
                     for i in range(0, max(len(nodes), 1), NODES_PER_MESSAGE)]  # fmt: skip
        await asyncio.gather(*(
            self._publisher.deliver(Envelope.make(
                check_topic(site), envelope.call, "sync;cloud",
                request=envelope.fields.get("request"), part=index, parts=len(parts), **part,
            ))
            for index, part in enumerate(parts)
        ))  # fmt: skip

    async def _device_digests(self, site: str, check_id: str) -> dict[str, str]:
        now = time.monotonic()
        self._digests = {k: v for k, v in self._digests.items() if v[0] > now - ANSWER_TIMEOUT}
        kept = self._digests.get(check_id)
        if kept is None:
            tree = await site_tree(self._database, self._config, site, at_cloud=True)
            kept = self._digests[check_id] = (now, tree.device_digests())
        return kept[1]

    async def _device_nodes(self, device_id: str, site: str) -> dict[str, NodeCells]:
        """The device's synced nodes here, as a check compares them (none if another's)."""
        if synced_node(f"/device/{device_id}/") is None:
            raise InvalidMessage(f"{device_id!r:.60} is no device id")
        read = await read_cells(self._database, await device_paths(self._database, device_id))
        compared = {path: _compared(cells, self._config) for path, cells in read.items()}
        nodes = {path: cells for path, cells in compared.items() if cells is not None}
        return nodes if _belongs(device_id, nodes, site, at_cloud=True) else {}


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidMessage("a check request's list is not a list of strings")
    return value
