"""A registry node as cells with their write times: what sync sends, compares and merges.

Cassandra resolves every cell by its write timestamp (last writer wins). Sync keeps that
rule across platforms by writing each cell on the other side with the timestamp it was
first written with (``USING TIMESTAMP``): a change replayed late, or twice, never
overwrites a newer one, and both sides end with the same cells whatever the order.

A removal leaves no cell to read, so :class:`NodeCells` also carries what the journal
says went (``removed`` values, ``erased``: the whole node), with the removal's timestamp.

A complete file (firmware) goes a block per message, each with the node's cells: the
receiving side marks the file complete (``getOk``) only once it holds every block, so no
reader there sees a file half-way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from m2m.blobstore.metadata import COMPLETE, FLAG_SET, IS_FILE, MAX_BLOCK_SIZE
from m2m.bus.envelope import InvalidMessage
from m2m.cassandra import Database
from m2m.errors import InvalidInput
from m2m.registry.node import NodeStatus, Write, check_values
from m2m.registry.paths import node_name, normalize_path, parent_path

CELL_COLUMNS = (
    "path, status, writetime(status) AS status_time, values, writetime(values) AS value_times"
)
"""The columns :func:`cells_of_row` reads, for a scan of ``registrynode``."""
_READ = f"SELECT {CELL_COLUMNS} FROM registrynode WHERE path IN ?"
_SET_STATUS = "UPDATE registrynode USING TIMESTAMP ? SET status = ? WHERE path = ?"
_ADD_VALUES = "UPDATE registrynode USING TIMESTAMP ? SET values = values + ? WHERE path = ?"
_REMOVE_VALUES = "UPDATE registrynode USING TIMESTAMP ? SET values = values - ? WHERE path = ?"
_LIST = "INSERT INTO registrynodechildren (path, name) VALUES (?, ?) USING TIMESTAMP ?"
_UNLIST = "DELETE FROM registrynodechildren USING TIMESTAMP ? WHERE path = ? AND name = ?"
_ERASE = (
    "DELETE FROM registrynode USING TIMESTAMP ? WHERE path = ?",
    "DELETE FROM registrynodechildren USING TIMESTAMP ? WHERE path = ?",
    "DELETE FROM registrynodedata USING TIMESTAMP ? WHERE path = ?",
)
_PATHS_PER_READ = 100
_READ_BLOCKS = "SELECT block, data, writetime(data) AS at FROM registrynodedata WHERE path = ?"
_BLOCK_NUMBERS = "SELECT block FROM registrynodedata WHERE path = ?"
_WRITE_BLOCK = "INSERT INTO registrynodedata (path, block, data) VALUES (?, ?, ?) USING TIMESTAMP ?"
_BLOCKS_PER_READ = 4


@dataclass(frozen=True)
class FileBlock:
    index: int
    data: bytes
    at: int
    """Its write time."""


@dataclass
class NodeCells:
    path: str
    status: tuple[int, int] | None = None
    """The status and its write time (microseconds), if the node has one."""
    values: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Each value and its write time."""
    removed: dict[str, int] = field(default_factory=dict)
    """Values removed, and when: applied as removals with that timestamp."""
    erased: int | None = None
    """When the node's rows were deleted (a hard delete), if they were."""
    blocks: int | None = None
    """A complete file's number of blocks: the cells go with one of them (``block``)."""
    block: FileBlock | None = None

    @property
    def is_complete_file(self) -> bool:
        complete = self.values.get(COMPLETE)
        flag = self.values.get(IS_FILE)
        return bool(complete and flag and complete[0] == flag[0] == FLAG_SET)

    @property
    def empty(self) -> bool:
        return self.status is None and not self.values

    def without(self, names: Iterable[str]) -> NodeCells:
        """These cells but the values named (values a platform keeps to itself)."""
        names = set(names)
        return replace(
            self,
            values={name: cell for name, cell in self.values.items() if name not in names},
            removed={name: at for name, at in self.removed.items() if name not in names},
        )

    def digest(self) -> bytes:
        """A hash of the node's cells, values and write times: equal on two platforms when
        they hold the same node."""
        hashing = hashlib.blake2b(digest_size=16)
        status, status_at = self.status or (-1, -1)
        path = self.path.encode()
        hashing.update(b"%d:%d:%d:%d:" % (len(self.values), status, status_at, len(path)))
        hashing.update(path)
        for name in sorted(self.values):  # each part after its length: no two read alike
            value, at = self.values[name]
            name_bytes, value_bytes = name.encode(), value.encode()
            hashing.update(b"%d:%d:%d:" % (at, len(name_bytes), len(value_bytes)))
            hashing.update(name_bytes + value_bytes)
        return hashing.digest()

    def to_fields(self) -> dict[str, Any]:
        """The cells as a bus message's fields (JSON)."""
        fields: dict[str, Any] = {"path": self.path}
        if self.status is not None:
            fields["status"] = list(self.status)
        if self.values:
            fields["values"] = {name: list(cell) for name, cell in self.values.items()}
        if self.removed:
            fields["removed"] = self.removed
        if self.erased is not None:
            fields["erased"] = self.erased
        if self.blocks is not None:
            fields["blocks"] = self.blocks
        if self.block is not None:
            data = base64.b64encode(self.block.data).decode()
            fields["block"] = {"index": self.block.index, "data": data, "time": self.block.at}
        return fields

    @classmethod
    def of_fields(cls, fields: Mapping[str, Any]) -> NodeCells:
        """The cells a bus message carries; :class:`InvalidMessage` if they are not cells."""
        try:
            path = normalize_path(_text(fields.get("path"), "path"))
            cells = cls(
                path,
                status=_cell(fields["status"], int) if "status" in fields else None,
                values={
                    _text(name, "value name"): _cell(cell, str)
                    for name, cell in _mapping(fields.get("values", {})).items()
                },
                removed={
                    _text(name, "value name"): _stamp(at)
                    for name, at in _mapping(fields.get("removed", {})).items()
                },
                erased=_stamp(fields["erased"]) if "erased" in fields else None,
                blocks=_count(fields["blocks"]) if "blocks" in fields else None,
                block=_block(fields["block"]) if "block" in fields else None,
            )
            check_values(path, {name: value for name, (value, _) in cells.values.items()})
            check_values(path, dict.fromkeys(cells.removed, ""))
        except (InvalidInput, ValueError, binascii.Error) as exc:
            raise InvalidMessage(f"not a registry node's cells: {exc}") from exc
        return cells


async def read_cells(database: Database, paths: Iterable[str]) -> dict[str, NodeCells]:
    """The cells of each node (empty for a node without rows), by path."""
    wanted = list(dict.fromkeys(paths))
    found = {path: NodeCells(path) for path in wanted}
    for start in range(0, len(wanted), _PATHS_PER_READ):
        for row in await database.execute(_READ, (wanted[start : start + _PATHS_PER_READ],)):
            found[row.path] = cells_of_row(row)
    return found


def cells_of_row(row: Any) -> NodeCells:
    """The cells of a ``registrynode`` row read with its write times (:data:`_READ`)."""
    values = row.values or {}
    return NodeCells(
        row.path,
        status=(row.status, row.status_time) if row.status is not None else None,
        values={
            name: (value, at)
            for (name, value), at in zip(values.items(), row.value_times or (), strict=True)
        },
    )


def cell_writes(cells: NodeCells) -> list[Write]:
    """The writes that merge ``cells`` into a platform's registry, each cell with its time."""
    writes: list[Write] = []
    parent = parent_path(cells.path)
    if cells.erased is not None:
        writes.extend((cql, (cells.erased, cells.path)) for cql in _ERASE)
        if parent is not None:
            writes.append((_UNLIST, (cells.erased, parent, node_name(cells.path))))
    if cells.status is not None:
        status, at = cells.status
        writes.append((_SET_STATUS, (at, status, cells.path)))
        if parent is not None and status == NodeStatus.CREATED:
            writes.append((_LIST, (parent, node_name(cells.path), at)))
        elif parent is not None and status == NodeStatus.DELETED:
            writes.append((_UNLIST, (at, parent, node_name(cells.path))))
    by_time: defaultdict[int, dict[str, str]] = defaultdict(dict)
    for name, (value, at) in cells.values.items():
        by_time[at][name] = value
    writes.extend((_ADD_VALUES, (at, values, cells.path)) for at, values in by_time.items())
    if cells.block is not None:
        block = cells.block
        writes.append((_WRITE_BLOCK, (cells.path, block.index, block.data, block.at)))
    removed_by_time: defaultdict[int, set[str]] = defaultdict(set)
    for name, at in cells.removed.items():
        removed_by_time[at].add(name)
    writes.extend(
        (_REMOVE_VALUES, (at, names, cells.path)) for at, names in removed_by_time.items()
    )
    return writes


async def merge_cells(database: Database, cells: NodeCells) -> NodeCells | None:
    """Merge ``cells`` into this platform's registry (last writer wins, cell by cell).

    Returns what won here where it is not what was sent (a newer value, a newer removal),
    for the sender to merge in turn; None when everything sent took.
    """
    writing = cells if cells.blocks is None else cells.without([COMPLETE])
    writes = cell_writes(writing)
    if not writes:
        return None
    await database.execute_all(writes)
    complete = cells.values.get(COMPLETE) if cells.blocks is not None else None
    if complete and await _block_count(database, cells.path) >= (cells.blocks or 0):
        writing = cells  # every block is here: the file is complete
        await database.execute_all(cell_writes(NodeCells(cells.path, values={COMPLETE: complete})))
    held = (await read_cells(database, [cells.path]))[cells.path]
    return newer_than_sent(writing, held)


async def _block_count(database: Database, path: str) -> int:
    count = 0
    async for rows in database.pages(_BLOCK_NUMBERS, (path,), page_size=1000):
        count += len(rows)
    return count


async def file_blocks(database: Database, cells: NodeCells) -> list[NodeCells]:
    """A complete file's cells as they travel: a copy with each of its blocks."""
    blocks: list[FileBlock] = []
    async for rows in database.pages(_READ_BLOCKS, (cells.path,), page_size=_BLOCKS_PER_READ):
        blocks.extend(FileBlock(row.block, row.data, row.at) for row in rows)
    if not blocks:
        return [replace(cells, blocks=0)]
    return [replace(cells, blocks=len(blocks), block=block) for block in blocks]


def newer_than_sent(sent: NodeCells, held: NodeCells) -> NodeCells | None:
    """What ``held`` (merged) has that beats ``sent``, as cells to send back."""
    answer = NodeCells(sent.path)
    if held.empty and sent.status is not None and sent.erased is None:
        # Nothing took: the node was erased here later than anything sent.
        latest = max([sent.status[1], *(at for _, at in sent.values.values())])
        answer.erased = latest + 1
        return answer
    if sent.status is not None and held.status is not None and held.status != sent.status:
        answer.status = held.status
    for name, cell in sent.values.items():
        here = held.values.get(name)
        if here is None:  # removed here after it was written there
            answer.removed[name] = cell[1] + 1
        elif here != cell:
            answer.values[name] = here
    for name in sent.removed:
        if name in held.values:  # written here after it was removed there
            answer.values[name] = held.values[name]
    if sent.erased is not None and not held.empty:
        answer.status = held.status
        answer.values.update(held.values)
    return None if answer.empty and not answer.removed and answer.erased is None else answer


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    return value


def _mapping(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("values must be an object")
    return value


def _stamp(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a write time must be microseconds, not {value!r:.40}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ValueError(f"a block count must be a number, not {value!r:.40}")
    return value


def _block(value: object) -> FileBlock:
    fields = _mapping(value)
    data = base64.b64decode(_text(fields.get("data"), "a block's data"), validate=True)
    if len(data) > MAX_BLOCK_SIZE:
        raise ValueError(f"a block of {len(data)} bytes, above {MAX_BLOCK_SIZE}")
    return FileBlock(_count(fields.get("index")), data, _stamp(fields.get("time")))


def _cell(value: object, kind: type) -> tuple[Any, int]:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], kind)):
        raise ValueError(f"a cell is [{kind.__name__}, microseconds], not {value!r:.60}")
    if isinstance(value[0], bool):
        raise ValueError("a status is a number")
    return value[0], _stamp(value[1])
