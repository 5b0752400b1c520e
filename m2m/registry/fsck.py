"""Checking the registry's invariants, and repairing what can be repaired without guessing.

What is checked is what the registry's own operations keep true (``node.py``,
``device.py``, the blobstore, the time series), so anything else is damage: an
interrupted delete, a lost write, rows edited by hand. Each finding has a kind:

- ``invalid-path``: a node whose path the registry cannot name (written by hand?);
- ``orphan-child``: a parent lists a child that has no node (no row, or never created);
- ``deleted-listed``: a parent lists a child that is soft-deleted (a delete unlists it);
- ``unlisted-node``: a created node that its parent does not list;
- ``ident-missing``: a device without a by-ident entry (or without an ident at all);
- ``ident-mismatch``: a device whose by-ident entry points to another device;
- ``ident-dangling``: a by-ident entry pointing to no device that has its ident;
- ``blob-metadata-invalid``, ``blob-blocks-missing``, ``blob-size-mismatch``: a complete
  file (``getOk``) whose values cannot be read, or whose blocks are missing or shorter
  than its size says (blocks past the size are no fault: a copy leaves them);
- ``ts-index-orphan``: a time-series index row naming a bucket that holds no record.

Why the tables are read in token order rather than the tree walked: a walk follows
listings, so it never reaches a node no listing leads to (an unlisted node is just that),
and it costs a round trip per level. Instead each page of ``registrynode`` (in token
order) fixes a slice of the token ring, up to the token of its last path; then the
listings (``registrynodechildren``) and the index rows (``timeseries_index``) whose
partitions lie in that slice are read, a page at a time. Every row is checked against
the rows it implies with lookups grouped into IN queries (:func:`_present`), so a page of
rows costs a few dozen requests, not one per row (a request costs the driver far more
than a row). A few slices are checked at once, as the walk mostly waits on Cassandra;
memory holds their pages and lookups, whatever the size of the registry. The end of a
slice is a point to resume from: its last path (the walk starts again after it). A PATH
narrows what is reported, not what is read: only reading every row finds the rows no
listing leads to.

A finding carries its repair, or why it has none. Repairs are separate functions: each
reads again what it is about to change and does nothing if it has been set right
meanwhile (by another repair of the same run, or by the platform), since two findings
may be two sides of one problem (a device whose entry points to a deleted device, and
that entry). What would need a guess (which of two devices keeps an ident, how long a
file was) is left as it is, with why.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from cassandra.metadata import Murmur3Token

from m2m.blobstore.errors import CorruptBlobError
from m2m.blobstore.metadata import BLOCK_SIZE, COMPLETE, IS_FILE, SIZE, BlobStat, is_flag_set
from m2m.cassandra import Database, Row
from m2m.registry.device import BY_IDENT, DEVICES, device_id_for
from m2m.registry.device_series import device_of_series
from m2m.registry.node import NodeState, NodeStatus, RegistryNode
from m2m.registry.paths import (
    ROOT,
    InvalidPathError,
    child_path,
    is_within,
    node_name,
    normalize_path,
    parent_path,
)
from m2m.timeseries.store import ALL_TYPES, records_partition

MIN_TOKEN = -(2**63)
MAX_TOKEN = 2**63 - 1
"""The token ring of Murmur3Partitioner, Cassandra's default."""
SLICE_NODES = 2000
"""Rows of ``registrynode`` per slice: also the page of the other tables' scans."""
SLICES_AHEAD = 4
"""Slices checked at once."""
IN_LIMIT = 200
"""Keys per IN query: few requests, yet each one short."""
BLOCKS_PER_PAGE = 2
"""Blocks of a file read at once when checking it (up to 8 MiB each)."""
SHOWN_BLOCKS = 5
"""Blocks a finding names, at most."""

_READ_VALUES = ("ident", "id", IS_FILE, SIZE, BLOCK_SIZE, COMPLETE)
"""The only values a check reads (:class:`_Node`'s fields, in order): others (settings, a
domain's list of devices) are never sent."""
_NODE_COLUMNS = "path, status, " + ", ".join(f"values['{name}']" for name in _READ_VALUES)
_SCAN_NODES = f"SELECT token(path), {_NODE_COLUMNS} FROM registrynode WHERE token(path) > ?"
_SELECT_NODES = f"SELECT {_NODE_COLUMNS} FROM registrynode WHERE path IN ?"
_SCAN_LISTINGS = (
    "SELECT path, name FROM registrynodechildren WHERE token(path) > ? AND token(path) <= ?"
)
_SCAN_INDEX_ROWS = (
    "SELECT id, type, date FROM timeseries_index WHERE token(id, type) > ? AND token(id, type) <= ?"
)
_SELECT_BLOCKS = "SELECT block, data FROM registrynodedata WHERE path = ? AND block < ?"
_ADD_LISTING = "INSERT INTO registrynodechildren (path, name) VALUES (?, ?)"
_REMOVE_LISTING = "DELETE FROM registrynodechildren WHERE path = ? AND name = ?"
_REMOVE_INDEX_ROW = "DELETE FROM timeseries_index WHERE id = ? AND type = ? AND date = ?"


@dataclass(frozen=True)
class _PairQuery:
    """Which (first, second) key pairs have rows: by one first and many seconds, or the
    reverse; each query selects the pair's two columns."""

    by_first: str
    by_second: str


_LISTINGS = _PairQuery(
    "SELECT path, name FROM registrynodechildren WHERE path = ? AND name IN ?",
    "SELECT path, name FROM registrynodechildren WHERE path IN ? AND name = ?",
)
_BUCKETS = _PairQuery(
    "SELECT id, date FROM timeseries WHERE id = ? AND date IN ? PER PARTITION LIMIT 1",
    "SELECT id, date FROM timeseries WHERE id IN ? AND date = ? PER PARTITION LIMIT 1",
)


class Kind(StrEnum):
    INVALID_PATH = "invalid-path"
    ORPHAN_CHILD = "orphan-child"
    DELETED_LISTED = "deleted-listed"
    UNLISTED_NODE = "unlisted-node"
    IDENT_MISSING = "ident-missing"
    IDENT_MISMATCH = "ident-mismatch"
    IDENT_DANGLING = "ident-dangling"
    BLOB_METADATA_INVALID = "blob-metadata-invalid"
    BLOB_BLOCKS_MISSING = "blob-blocks-missing"
    BLOB_SIZE_MISMATCH = "blob-size-mismatch"
    TS_INDEX_ORPHAN = "ts-index-orphan"


@dataclass(frozen=True)
class Outcome:
    """What a repair did (``repaired``), or why it left things as they are."""

    repaired: bool
    text: str


Repair = Callable[[Database], Awaitable[Outcome]]


@dataclass(frozen=True)
class Finding:
    """A broken invariant at ``path`` (for ``ts-*`` kinds: a series id).

    ``repair`` fixes it without guessing; without one, ``left`` says why it needs a person.
    """

    kind: Kind
    path: str
    detail: str
    repair: Repair | None = None
    left: str | None = None

    async def outcome(self, database: Database, repair: bool) -> Outcome | None:
        """What becomes of it: repaired (if asked to), or left; None if not asked to."""
        if self.repair is None:
            return Outcome(False, self.left or "")
        return await self.repair(database) if repair else None


@dataclass(frozen=True)
class _Checking:
    """A slice being checked: its task, its last path (None: the end), how many nodes."""

    task: asyncio.Future[list[Finding]]
    last_path: str | None
    nodes: int


@dataclass(frozen=True)
class Checkpoint:
    """Every row up to ``path`` (in walk order) is checked and its findings handed out."""

    path: str


@dataclass
class Tally:
    """Rows checked (within the PATH checked), and rows of ``registrynode`` read in all."""

    nodes: int = 0
    listings: int = 0
    index_rows: int = 0
    nodes_read: int = 0


def path_token(path: str) -> int:
    """The token of ``path``'s partition: where it lies in the walk's order."""
    return int(Murmur3Token.from_key(path.encode()).value)


class _Node(NamedTuple):
    """A row of ``_NODE_COLUMNS``: a node's status and the only values checks read.

    Rows stay tuples (the walk makes one per row it reads); a missing row is a node with
    no status.
    """

    path: str
    status: int | None
    ident: str | None = None
    id: str | None = None
    is_file: str | None = None
    size: str | None = None
    block_size: str | None = None
    complete: str | None = None

    @property
    def created(self) -> bool:
        return self.status == NodeStatus.CREATED

    @property
    def deleted(self) -> bool:
        return self.status == NodeStatus.DELETED

    def blob_state(self) -> NodeState:
        """What the blobstore reads of a file node."""
        picked = zip(_READ_VALUES[2:], self[4:], strict=True)
        values = {name: value for name, value in picked if value is not None}
        return NodeState(NodeStatus.of_column(self.status), values)


class RegistryCheck:
    """One check of the registry under ``scope``, after ``after`` (a path) if resuming."""

    def __init__(self, database: Database, scope: str = ROOT, after: str | None = None) -> None:
        self.database = database
        self.scope = scope
        self.after = after
        self.tally = Tally()

    async def walk(self) -> AsyncIterator[Finding | Checkpoint]:
        """Findings as they are found, and a checkpoint at the end of each slice.

        The walk waits on Cassandra more than it computes, so up to ``SLICES_AHEAD``
        slices are checked at once; their findings still come out in walk order.
        """
        checking: deque[_Checking] = deque()
        try:
            async for lower, upper, nodes in self._slices():
                task = asyncio.ensure_future(self._slice(lower, upper, nodes))
                checking.append(_Checking(task, nodes[-1].path if nodes else None, len(nodes)))
                if len(checking) == SLICES_AHEAD:
                    async for item in self._settle(checking.popleft()):
                        yield item
            while checking:
                async for item in self._settle(checking.popleft()):
                    yield item
        finally:
            for left in checking:
                left.task.cancel()

    async def _slices(self) -> AsyncIterator[tuple[int, int, list[_Node]]]:
        """The slices of the token ring: each page of nodes, up to its last token; and the
        rest of the ring (no node there, but maybe listings and index rows)."""
        lower = MIN_TOKEN if self.after is None else path_token(self.after)
        async for rows in self.database.pages(_SCAN_NODES, (lower,), SLICE_NODES):
            upper = rows[-1][0]
            yield lower, upper, [_Node._make(row[1:]) for row in rows]
            lower = upper
        yield lower, MAX_TOKEN, []

    async def _settle(self, checking: _Checking) -> AsyncIterator[Finding | Checkpoint]:
        for finding in await checking.task:
            yield finding
        self.tally.nodes_read += checking.nodes
        if checking.last_path is not None:
            yield Checkpoint(checking.last_path)

    async def _slice(self, lower: int, upper: int, nodes: list[_Node]) -> list[Finding]:
        """The findings of a slice: its nodes, listings and index rows, checked at once."""
        parts = await asyncio.gather(
            self._check_nodes(nodes),
            self._check_pages(_SCAN_LISTINGS, lower, upper, self._check_listings),
            self._check_pages(_SCAN_INDEX_ROWS, lower, upper, self._check_index_rows),
        )
        return [finding for part in parts for finding in part]

    async def _check_pages(
        self,
        scan: str,
        lower: int,
        upper: int,
        check: Callable[[list[Row]], Awaitable[list[Finding]]],
    ) -> list[Finding]:
        findings = []
        async for rows in self.database.pages(scan, (lower, upper), SLICE_NODES):
            findings += await check(rows)
        return findings

    # -- nodes -------------------------------------------------------------------------

    async def _check_nodes(self, nodes: list[_Node]) -> list[Finding]:
        nodes = [node for node in nodes if self._holds(node.path)]
        self.tally.nodes += len(nodes)
        findings = []
        created = []
        for node in nodes:
            problem = _path_problem(node.path)
            if problem is not None:
                why = "no operation of the registry reaches it: remove its rows with CQL"
                findings.append(_left(Kind.INVALID_PATH, node.path, problem, why))
            elif node.created:
                created.append(node)
        checks = await asyncio.gather(
            self._check_listed([node for node in created if node.path != ROOT]),
            self._check_devices([node for node in created if _is_device(node.path)]),
            self._check_entries([node for node in created if parent_path(node.path) == BY_IDENT]),
        )
        findings += [finding for found in checks for finding in found]
        for node in created:
            if is_flag_set(node.is_file):
                findings += await self._check_blob(node)
        return findings

    async def _check_listed(self, nodes: list[_Node]) -> list[Finding]:
        """``unlisted-node``: created nodes their parent does not list."""
        listing_of = {node.path: _listing(node.path) for node in nodes}
        listed = await _present(self.database, _LISTINGS, set(listing_of.values()))
        unlisted = [path for path, listing in listing_of.items() if listing not in listed]
        parents = await _load(self.database, {_parent(path) for path in unlisted})
        findings = []
        for path in unlisted:
            parent = parents[_parent(path)]
            detail = f"{parent.path} does not list it"
            if parent.created:
                findings.append(_fixable(Kind.UNLISTED_NODE, path, detail, list_in_parent, path))
            else:
                findings.append(
                    _left(Kind.UNLISTED_NODE, path, detail, _parent_not_created(parent))
                )
        return findings

    async def _check_devices(self, devices: list[_Node]) -> list[Finding]:
        """``ident-missing``, ``ident-mismatch``: each device's by-ident entry names it."""
        findings = []
        entry_of: dict[str, str] = {}
        for device in devices:
            ident = device.ident
            entry = _entry_path(ident) if ident else None
            if entry is not None:
                entry_of[device.path] = entry
            elif not ident:
                findings.append(
                    _left(
                        Kind.IDENT_MISSING,
                        device.path,
                        "the device has no ident value",
                        "which ident it has is unknown: set its ident value, then check again",
                    )
                )
            else:
                findings.append(
                    _left(
                        Kind.IDENT_MISSING,
                        device.path,
                        f"its ident {ident!r} cannot name a node under {BY_IDENT}",
                        "no by-ident entry can point to it: the ident needs a person",
                    )
                )
        entries = await _load(self.database, set(entry_of.values()))
        pointed_to = {
            device_path: _device_path(entries[entry_path].id)
            for device_path, entry_path in entry_of.items()
        }
        others = await _load(
            self.database,
            {other for device, other in pointed_to.items() if other not in (None, device)},
        )
        for device_path, entry_path in entry_of.items():
            other = pointed_to[device_path]
            finding = _check_entry_of(device_path, entries[entry_path], others.get(other or ""))
            if finding is not None:
                findings.append(finding)
        return findings

    async def _check_entries(self, entries: list[_Node]) -> list[Finding]:
        """``ident-dangling``: by-ident entries pointing to no device with their ident."""
        targets = await _load(
            self.database,
            {path for entry in entries if (path := _device_path(entry.id))},
        )
        findings = []
        for entry in entries:
            ident, target_id = node_name(entry.path), entry.id
            target_path = _device_path(target_id)
            if target_path is None:
                detail = f"its id {target_id!r} is not a device id" if target_id else "no id"
            elif not _claims(targets[target_path], ident):
                detail = f"it points to device {target_id}, which {_why_not(targets[target_path])}"
            else:
                continue
            findings.append(_fixable(Kind.IDENT_DANGLING, entry.path, detail, settle_entry, ident))
        return findings

    async def _check_blob(self, node: _Node) -> list[Finding]:
        """``blob-*``: a complete file has every block below its size, each long enough."""
        try:
            stat = BlobStat.of_node(node.path, node.blob_state())
        except CorruptBlobError as exc:
            why = "the file's size or block size would be a guess"
            return [_left(Kind.BLOB_METADATA_INVALID, node.path, str(exc), why)]
        if not stat.ok:  # being written, or abandoned: readers refuse it already
            return []
        count = -(-stat.size // stat.block_size)
        missing, short = _Blocks(), _Blocks()
        expected = 0
        async for rows in self.database.pages(_SELECT_BLOCKS, (node.path, count), BLOCKS_PER_PAGE):
            for block, data in rows:
                missing.add(range(expected, block))
                length = min(stat.block_size, stat.size - block * stat.block_size)
                if len(data) < length:
                    short.add([block], f"block {block} holds {len(data)}")
                expected = block + 1
        missing.add(range(expected, count))
        why = "the content is lost: upload the file again"
        findings = []
        if missing.count:
            detail = f"{missing.count} of its {count} blocks are missing: {missing}"
            findings.append(_left(Kind.BLOB_BLOCKS_MISSING, node.path, detail, why))
        if short.count:
            detail = (
                f"fsize {stat.size} with blsize {stat.block_size}, but {short.count} block(s) "
                f"are shorter: {short}"
            )
            findings.append(_left(Kind.BLOB_SIZE_MISMATCH, node.path, detail, why))
        return findings

    # -- listings ----------------------------------------------------------------------

    async def _check_listings(self, rows: list[Row]) -> list[Finding]:
        """``orphan-child``, ``deleted-listed``: every listed child is a created node."""
        listed = [
            (parent, name, f"{parent}{name}/")
            for parent, name in rows
            if self._holds(f"{parent}{name}/")
        ]
        self.tally.listings += len(listed)
        children = await _load(self.database, {child for _, _, child in listed})
        findings = []
        for parent, name, child in listed:
            node = children[child]
            if node.created:
                continue
            kind = Kind.DELETED_LISTED if node.deleted else Kind.ORPHAN_CHILD
            detail = f"{parent} lists {name!r}, which {_why_not(node)}"
            findings.append(_fixable(kind, child, detail, remove_listing, parent, name))
        return findings

    # -- time series index -------------------------------------------------------------

    async def _check_index_rows(self, rows: list[Row]) -> list[Finding]:
        """``ts-index-orphan``: each index row names a bucket holding records."""
        indexed = [
            (series_id, record_type, bucket)
            for series_id, record_type, bucket in rows
            if self._holds_series(series_id)
        ]
        self.tally.index_rows += len(indexed)
        held = await _present(
            self.database, _BUCKETS, {(_partition(i, t), b) for i, t, b in indexed}
        )
        return [
            _fixable(
                Kind.TS_INDEX_ORPHAN,
                series_id,
                f"bucket {bucket} of {_type_text(record_type)} holds no record",
                remove_index_row,
                series_id,
                record_type,
                bucket,
            )
            for series_id, record_type, bucket in indexed
            if (_partition(series_id, record_type), bucket) not in held
        ]

    def _holds(self, path: str) -> bool:
        """Whether the check reports on ``path``: the root's holds every row, even those
        whose path is not a registry path at all."""
        return self.scope == ROOT or is_within(path, self.scope)

    def _holds_series(self, series_id: str) -> bool:
        """A device's series belongs to the device's node; any other, to the root only."""
        if self.scope == ROOT:
            return True
        device_id = device_of_series(series_id)
        return device_id is not None and is_within(f"{DEVICES}{device_id}/", self.scope)


# -- repairs ---------------------------------------------------------------------------

_NONE_NEEDED = Outcome(True, "none needed any more (changed since found)")


async def remove_listing(database: Database, parent: str, name: str) -> Outcome:
    """Unlist a child that is not created, as deleting it would have."""
    child = f"{parent}{name}/"
    if (await _load(database, {child}))[child].created:
        return _NONE_NEEDED
    await database.execute(_REMOVE_LISTING, (parent, name))
    return Outcome(True, f"removed {name!r} from the children of {parent}")


async def list_in_parent(database: Database, path: str) -> Outcome:
    """List a created node in its parent, as creating it would have, if the parent is."""
    parent = _parent(path)
    nodes = await _load(database, {path, parent})
    if not nodes[path].created:
        return _NONE_NEEDED
    if not nodes[parent].created:
        return Outcome(False, _parent_not_created(nodes[parent]))
    await database.execute(_ADD_LISTING, _listing(path))
    return Outcome(True, f"listed it in {parent}")


async def point_entry(database: Database, device_path: str, ident: str) -> Outcome:
    """Point the by-ident entry of ``ident`` to the device, unless another one claims it."""
    entry_path = child_path(BY_IDENT, ident)
    device_id = node_name(device_path)
    nodes = await _load(database, {device_path, entry_path})
    entry = nodes[entry_path]
    if not _claims(nodes[device_path], ident):
        return _NONE_NEEDED
    if entry.created and entry.id == device_id:
        return _NONE_NEEDED
    other = _device_path(entry.id) if entry.created else None
    if other is not None and _claims((await _load(database, {other}))[other], ident):
        return Outcome(False, _two_claims(node_name(other), ident))
    node = RegistryNode(database, entry_path)
    await node.set_value("id", device_id)
    await node.check()
    return Outcome(True, f"{entry_path} points to device {device_id}")


async def settle_entry(database: Database, ident: str) -> Outcome:
    """Point a by-ident entry to the device its ident names, if that device has the ident;
    else delete it (soft), as deleting its device would have."""
    entry_path = child_path(BY_IDENT, ident)
    derived = f"{DEVICES}{device_id_for(ident)}/"
    entry = (await _load(database, {entry_path}))[entry_path]
    target = _device_path(entry.id)
    nodes = await _load(database, {derived, *([target] if target else [])})
    if not entry.created or (target is not None and _claims(nodes[target], ident)):
        return _NONE_NEEDED
    node = RegistryNode(database, entry_path)
    if _claims(nodes[derived], ident):
        await node.set_value("id", node_name(derived))
        return Outcome(True, f"points to device {node_name(derived)}, which has this ident")
    await node.delete()
    return Outcome(
        True,
        "deleted (soft), as deleting its device does: neither the device it points to nor "
        "the one its ident names has this ident",
    )


async def remove_index_row(
    database: Database, series_id: str, record_type: str, bucket: str
) -> Outcome:
    """Drop an index row whose bucket holds no record, as deleting the records would have."""
    pair = (_partition(series_id, record_type), bucket)
    if await _present(database, _BUCKETS, {pair}):
        return _NONE_NEEDED
    await database.execute(_REMOVE_INDEX_ROW, (series_id, record_type, bucket))
    return Outcome(True, f"removed the index row of bucket {bucket}")


# -- lookups ---------------------------------------------------------------------------


async def _load(database: Database, paths: set[str]) -> dict[str, _Node]:
    """The nodes at ``paths`` (undefined where there is no row), a few IN queries."""
    answers = await asyncio.gather(
        *(database.execute(_SELECT_NODES, (chunk,)) for chunk in _chunks(list(paths)))
    )
    found = {row[0]: _Node._make(row) for rows in answers for row in rows}
    for path in paths - found.keys():
        found[path] = _Node(path, None)
    return found


async def _present(
    database: Database, query: _PairQuery, pairs: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of ``pairs`` have rows, grouped into as few IN queries as the pairs allow.

    Each pair joins the larger group, of its first key or of its second: a page holds many
    nodes of one parent (devices under ``/device/``) or many of one name (``settings``
    under each device), and a group is asked in one query (up to ``IN_LIMIT`` keys).
    """
    firsts = Counter(first for first, _ in pairs)
    seconds = Counter(second for _, second in pairs)
    by_first: dict[str, list[str]] = defaultdict(list)
    by_second: dict[str, list[str]] = defaultdict(list)
    for first, second in sorted(pairs):
        if firsts[first] >= seconds[second]:
            by_first[first].append(second)
        else:
            by_second[second].append(first)
    requests = [
        database.execute(query.by_first, (first, chunk))
        for first, keys in by_first.items()
        for chunk in _chunks(keys)
    ]
    requests += [
        database.execute(query.by_second, (chunk, second))
        for second, keys in by_second.items()
        for chunk in _chunks(keys)
    ]
    return {(row[0], row[1]) for rows in await asyncio.gather(*requests) for row in rows}


def _chunks(keys: Sequence[str]) -> Iterable[list[str]]:
    return (list(keys[start : start + IN_LIMIT]) for start in range(0, len(keys), IN_LIMIT))


# -- the rules, as small functions -------------------------------------------------------


def _fixable(
    kind: Kind, path: str, detail: str, repair: Callable[..., Awaitable[Outcome]], *args: str
) -> Finding:
    """A finding that ``repair(database, *args)`` fixes."""

    def bound(database: Database) -> Awaitable[Outcome]:
        return repair(database, *args)

    return Finding(kind, path, detail, repair=bound)


def _left(kind: Kind, path: str, detail: str, why: str) -> Finding:
    """A finding only a person can fix, and ``why``."""
    return Finding(kind, path, detail, left=why)


def _check_entry_of(device_path: str, entry: _Node, other: _Node | None) -> Finding | None:
    """What is wrong with a device's by-ident entry, if anything; ``other`` is the device
    it points to instead (None: its id names no device)."""
    ident = node_name(entry.path)
    if entry.created and entry.id == node_name(device_path):
        return None
    if not entry.created or not entry.id:
        detail = f"{entry.path} {_why_not(entry) if not entry.created else 'has no id'}"
        return _fixable(Kind.IDENT_MISSING, device_path, detail, point_entry, device_path, ident)
    if other is None:
        detail = f"{entry.path} points to {entry.id!r}, which is not a device id"
    elif _claims(other, ident):
        detail = f"{entry.path} points to device {entry.id}"
        return _left(Kind.IDENT_MISMATCH, device_path, detail, _two_claims(entry.id, ident))
    else:
        detail = f"{entry.path} points to device {entry.id}, which {_why_not(other)}"
    return _fixable(Kind.IDENT_MISMATCH, device_path, detail, point_entry, device_path, ident)


def _two_claims(other_id: str, ident: str) -> str:
    return f"device {other_id} has ident {ident!r} too: which one keeps it needs a person"


def _parent_not_created(parent: _Node) -> str:
    return f"its parent {parent.path} {_why_not(parent)}: recover or create it first"


def _why_not(node: _Node) -> str:
    """Why a node is not there, or with which ident it is (for devices)."""
    if node.deleted:
        return "is deleted"
    if not node.created:
        return "does not exist"
    return f"has ident {node.ident or ''!r}"


def _claims(device: _Node, ident: str) -> bool:
    return device.created and device.ident == ident


def _is_device(path: str) -> bool:
    return path.startswith(DEVICES) and _device_path(node_name(path)) == path


def _device_path(device_id: str | None) -> str | None:
    """The node of the device with this id, if it is one (a UUID, written canonically)."""
    try:
        canonical = str(uuid.UUID(device_id or ""))
    except ValueError:
        return None
    return f"{DEVICES}{canonical}/" if canonical == device_id else None


def _path_problem(path: str) -> str | None:
    """Why a node's path is not one the registry writes, if it is not."""
    try:
        normalized = normalize_path(path)
    except InvalidPathError as exc:
        return exc.problem
    return None if normalized == path else "it does not end with '/'"


def _entry_path(ident: str) -> str | None:
    try:
        return child_path(BY_IDENT, ident)
    except InvalidPathError:
        return None


def _parent(path: str) -> str:
    parent = parent_path(path)
    assert parent is not None, "the root has no parent"
    return parent


def _listing(path: str) -> tuple[str, str]:
    """The listing row of a node: its parent's path and its name."""
    return _parent(path), node_name(path)


def _partition(series_id: str, record_type: str) -> str:
    """The partition key of the records an index row lists."""
    return records_partition(series_id, None if record_type == ALL_TYPES else record_type)


def _type_text(record_type: str) -> str:
    return "every type" if record_type == ALL_TYPES else f"type {record_type!r}"


@dataclass
class _Blocks:
    """Blocks of a file with a fault: how many, and the first few, as a finding names them
    (a corrupt size can claim billions of missing blocks)."""

    count: int = 0
    shown: list[str] = field(default_factory=list)

    def add(self, blocks: Sequence[int], text: str | None = None) -> None:
        self.count += len(blocks)
        room = SHOWN_BLOCKS - len(self.shown)
        self.shown += [text or str(block) for block in blocks[:room]]

    def __str__(self) -> str:
        return ", ".join(self.shown) + ("…" if self.count > len(self.shown) else "")
