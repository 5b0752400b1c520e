"""Registry nodes: a filesystem of paths with a status, string values, children and data.

The rows are the original platform's (``spec/storage.md``): ``registrynode`` holds a
node's status and values, ``registrynodechildren`` the names its children are listed
under, ``registrynodedata`` its data blocks (the blobstore gives them file semantics).
Every write sets cells, never reads-then-writes a row, so servers writing the same nodes
merge cell by cell (last write wins) instead of overwriting each other's values.

A :class:`RegistryNode` is only a handle (the database and a normalised path): creating
one sends nothing, and it caches nothing, so what it reads is what the keyspace holds.
Independent requests go out together (``asyncio.gather``), bounded by the Database:
a whole level of a subtree costs one round trip, not one per child.

Recursive operations work bottom-up where it matters: a node is marked deleted only once
its subtree is, and a copy appears at its destination (listed, status created) only once
its whole subtree and data were written. An interrupted delete or copy therefore leaves
a tree that is consistent at every level, and doing it again finishes the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

from m2m.cassandra import Database
from m2m.errors import InvalidInput, M2MError
from m2m.metrics import BLOB_BYTES_STORED
from m2m.registry.journal import journal_write, now_stamp
from m2m.registry.paths import (
    InvalidPathError,
    child_path,
    is_hidden,
    is_within,
    node_name,
    normalize_path,
    parent_path,
)
from m2m.text import utf8_size

_SELECT_NODE = "SELECT status, values FROM registrynode WHERE path = ?"
_SELECT_NODES = "SELECT path, status, values FROM registrynode WHERE path IN ?"
_SELECT_STATUS = "SELECT status FROM registrynode WHERE path = ?"
_SET_STATUS = "UPDATE registrynode SET status = ? WHERE path = ?"
_SET_STATUS_ADD_VALUES = "UPDATE registrynode SET status = ?, values = values + ? WHERE path = ?"
_SET_STATUS_REPLACE_VALUES = "UPDATE registrynode SET status = ?, values = ? WHERE path = ?"
_ADD_VALUES = "UPDATE registrynode SET values = values + ? WHERE path = ?"
_REMOVE_VALUES = "UPDATE registrynode USING TIMESTAMP ? SET values = values - ? WHERE path = ?"
_DELETE_NODE = "DELETE FROM registrynode USING TIMESTAMP ? WHERE path = ?"
_SELECT_PATHS_BY_STATUS = "SELECT path FROM registrynode WHERE status = ?"

_SELECT_CHILDREN = "SELECT name FROM registrynodechildren WHERE path = ?"
_ADD_CHILD = "INSERT INTO registrynodechildren (path, name) VALUES (?, ?)"
_REMOVE_CHILD = "DELETE FROM registrynodechildren WHERE path = ? AND name = ?"
_REMOVE_ALL_CHILDREN = "DELETE FROM registrynodechildren USING TIMESTAMP ? WHERE path = ?"

_SELECT_BLOCK = "SELECT data FROM registrynodedata WHERE path = ? AND block = ?"
_SELECT_BLOCKS = "SELECT block, data FROM registrynodedata WHERE path = ?"
_WRITE_BLOCK = "INSERT INTO registrynodedata (path, block, data) VALUES (?, ?, ?)"
_DELETE_BLOCKS_FROM = "DELETE FROM registrynodedata WHERE path = ? AND block >= ?"
_DELETE_ALL_BLOCKS = "DELETE FROM registrynodedata WHERE path = ?"
_ERASE_BLOCKS = "DELETE FROM registrynodedata USING TIMESTAMP ? WHERE path = ?"

"""Seconds to wait before each new attempt at a block request the driver could not send."""
_CHILDREN_PAGE_SIZE = 1000
_BLOCKS_PER_COPY_PAGE = 4
"""Blocks (512 KiB each by default) read per page when copying, and written at once."""


Write: TypeAlias = tuple[str, tuple[Any, ...]]
"""One statement and its values, for callers that send several writes together."""


class NodeStatus(IntEnum):
    """A node's ``status`` column; a missing row or a null status reads as UNDEFINED."""

    UNDEFINED = 0
    DELETED = 5
    CREATED = 100

    @classmethod
    def of_column(cls, value: int | None) -> NodeStatus:
        try:
            return cls(value) if value is not None else cls.UNDEFINED
        except ValueError:  # a value no platform writes
            return cls.UNDEFINED


@dataclass(frozen=True)
class NodeState:
    """A node's status and values, read together in one request."""

    status: NodeStatus
    values: dict[str, str]

    @property
    def exists(self) -> bool:
        return self.status is NodeStatus.CREATED


class NodeNotFoundError(M2MError):
    """The node is not created (never was, or was deleted)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"registry node {path} does not exist")
        self.path = path


class NodeExistsError(M2MError):
    """The node exists where an operation needs the place free (a copy's destination)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"registry node {path} already exists")
        self.path = path


MAX_VALUES_BYTES = 1024 * 1024
"""The most value text (names and values, UTF-8) one write may carry. Cassandra refuses a
request over 16 MiB; values are names, settings and states: files go to the blobstore."""


class InvalidValueError(InvalidInput):
    """Values Cassandra would refuse: a lone surrogate (not text), or too many bytes."""


def check_values(path: str, values: Mapping[str, str]) -> None:
    """Refuse values that could not be stored, before the driver fails on them half-way."""
    total = 0
    for name, value in values.items():
        name_size, value_size = utf8_size(name), utf8_size(value)
        if name_size is None or value_size is None:
            raise InvalidValueError(
                f"value {name!r:.80} of registry node {path}: a lone surrogate is not text"
            )
        total += name_size + value_size
    if total > MAX_VALUES_BYTES:
        raise InvalidValueError(
            f"values of registry node {path}: {total} bytes, above {MAX_VALUES_BYTES} a write"
        )


class RegistryNode:
    """A handle on the node at one path; every method is one short conversation with Cassandra.

    Values are strings. Reading or writing values does not create the node: ``create``
    or ``check`` does (writing values first and creating afterwards is fine).
    """

    __slots__ = ("database", "path")

    def __init__(self, database: Database, path: str) -> None:
        """Validates and normalises ``path`` (raises :class:`InvalidPathError`)."""
        self.database = database
        self.path = normalize_path(path)

    @classmethod
    def _stored(cls, database: Database, path: str) -> RegistryNode:
        """A node at a path known to be valid (derived from one, or read from the keyspace)."""
        node = cls.__new__(cls)
        node.database = database
        node.path = path
        return node

    def __repr__(self) -> str:
        return f"RegistryNode({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RegistryNode)
            and other.path == self.path
            and other.database is self.database
        )

    def __hash__(self) -> int:
        return hash(self.path)

    # -- where it is -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name the parent lists it under ("" for the root)."""
        return node_name(self.path)

    @property
    def is_hidden(self) -> bool:
        return is_hidden(self.name)

    @property
    def parent(self) -> RegistryNode | None:
        path = parent_path(self.path)
        return None if path is None else RegistryNode._stored(self.database, path)

    def ancestors(self) -> list[RegistryNode]:
        """The parent, its parent, … up to and including the root."""
        lineage = []
        node = self.parent
        while node is not None:
            lineage.append(node)
            node = node.parent
        return lineage

    def child(self, name: str) -> RegistryNode:
        """The child called ``name`` (validated: one path segment)."""
        return RegistryNode._stored(self.database, child_path(self.path, name))

    def _listed_child(self, name: str) -> RegistryNode:
        return RegistryNode._stored(self.database, f"{self.path}{name}/")

    # -- status ------------------------------------------------------------------------

    async def load(self) -> NodeState:
        """Status and values in one request."""
        rows = await self.database.execute(_SELECT_NODE, (self.path,))
        if not rows:
            return NodeState(NodeStatus.UNDEFINED, {})
        return NodeState(NodeStatus.of_column(rows[0].status), dict(rows[0].values or {}))

    async def status(self) -> NodeStatus:
        rows = await self.database.execute(_SELECT_STATUS, (self.path,))
        return NodeStatus.of_column(rows[0].status if rows else None)

    async def exists(self) -> bool:
        """Whether the node is created (a deleted node does not exist)."""
        return await self.status() is NodeStatus.CREATED

    async def create(self) -> None:
        """Mark the node created and listed in its parent; ancestors not created are too."""
        missing = await _not_created(self.ancestors())
        await asyncio.gather(*(node.mark_created() for node in (self, *missing)))

    async def check(self) -> bool:
        """Create the node if it is not created (undefined or deleted); True if it was not.

        Ancestors found not created are created as well, whatever the node's own status.
        """
        missing = await _not_created([self, *self.ancestors()])
        await asyncio.gather(*(node.mark_created() for node in missing))
        return bool(missing) and missing[0] is self

    async def mark_created(self, values: Mapping[str, str] | None = None) -> None:
        """Status created, ``values`` merged in, listed in its parent; ancestors not looked at.

        For writers of whole subtrees, top-down, that know the parent exists (import);
        anyone else calls :meth:`create` or :meth:`check`.
        """
        await self.database.execute_all(self.creation(values))

    def creation(self, values: Mapping[str, str] | None = None) -> list[Write]:
        """The writes of :meth:`mark_created`, for a caller sending them with others."""
        writes: list[Write]
        if values:
            check_values(self.path, values)
            writes = [(_SET_STATUS_ADD_VALUES, (NodeStatus.CREATED.value, dict(values), self.path))]
        else:
            writes = [(_SET_STATUS, (NodeStatus.CREATED.value, self.path))]
        parent = parent_path(self.path)
        if parent is not None:
            writes.append((_ADD_CHILD, (parent, self.name)))
        return self._journaled(writes)

    def _journaled(
        self,
        writes: list[Write],
        removed: Iterable[str] = (),
        erased: bool = False,
        stamp: int | None = None,
    ) -> list[Write]:
        """``writes`` and, if the registry keeps a journal, its entry for this node."""
        if self.database.registry_journal:
            stamp = now_stamp() if stamp is None else stamp
            writes.append(journal_write(self.path, stamp, removed, erased))
        return writes

    async def _set_status(self, status: NodeStatus) -> None:
        await self.database.execute_all(self._journaled([(_SET_STATUS, (status.value, self.path))]))

    async def _list_in_parent(self) -> None:
        parent = parent_path(self.path)
        if parent is not None:
            await self.database.execute(_ADD_CHILD, (parent, self.name))

    async def _unlist_from_parent(self) -> None:
        parent = parent_path(self.path)
        if parent is not None:
            await self.database.execute(_REMOVE_CHILD, (parent, self.name))

    # -- values ------------------------------------------------------------------------

    async def values(self) -> dict[str, str]:
        return (await self.load()).values

    async def value(self, name: str, default: str | None = None) -> str | None:
        return (await self.values()).get(name, default)

    async def set_value(self, name: str, value: str) -> None:
        await self.set_values({name: value})

    async def set_values(self, values: Mapping[str, str]) -> None:
        """Set these values in one write; the node's other values are left as they are."""
        if values:
            await self.database.execute_all(self.values_write(values))

    def values_write(self, values: Mapping[str, str]) -> list[Write]:
        """The writes of :meth:`set_values`, for a caller sending them with others."""
        check_values(self.path, values)
        return self._journaled([(_ADD_VALUES, (dict(values), self.path))])

    async def delete_value(self, name: str) -> None:
        await self.delete_values((name,))

    async def delete_values(self, names: Iterable[str]) -> None:
        """Remove these values in one write (names not present are no error)."""
        names = set(names)
        if names:
            stamp = now_stamp()
            await self.database.execute_all(
                self._journaled([(_REMOVE_VALUES, (stamp, names, self.path))], names, stamp=stamp)
            )

    # -- children ----------------------------------------------------------------------

    async def children_names(self, include_hidden: bool = False) -> list[str]:
        """The names the node lists, in name order; hidden ones (``.x``) only if asked."""
        names: list[str] = []
        async for rows in self.database.pages(
            _SELECT_CHILDREN, (self.path,), page_size=_CHILDREN_PAGE_SIZE
        ):
            names.extend(row.name for row in rows)
        return names if include_hidden else [name for name in names if not is_hidden(name)]

    async def children(self, include_hidden: bool = False) -> list[RegistryNode]:
        return [self._listed_child(name) for name in await self.children_names(include_hidden)]

    async def walk(self, include_hidden: bool = False) -> AsyncIterator[tuple[int, RegistryNode]]:
        """This node (depth 0) and its descendants, depth first, children in name order.

        The children of a whole level of siblings are listed at once.
        """
        yield 0, self
        async for item in _descendants(await self.children(include_hidden), 1, include_hidden):
            yield item

    # -- deletion ----------------------------------------------------------------------

    async def delete(self, hard: bool = False) -> int:
        """Delete the node and its subtree; how many nodes were deleted (0: nothing to do).

        Soft (the default): each node gets status deleted and leaves its parent's
        listing; values and data stay, so the node can be recovered, until
        :func:`cleanup`. Hard: every row of the subtree goes, data blocks included. A
        soft-deleted node can be hard-deleted too, but its descendants were unlisted by
        the soft delete, so they are not reached: :func:`cleanup` finds them by status.
        """
        status = await self.status()
        if hard:
            return 0 if status is NodeStatus.UNDEFINED else await self._delete_hard(unlist=True)
        return await self._delete_soft() if status is NodeStatus.CREATED else 0

    async def _delete_soft(self) -> int:
        below = await asyncio.gather(*(c._delete_soft() for c in await self.children(True)))
        await self._set_status(NodeStatus.DELETED)
        await self._unlist_from_parent()
        return 1 + sum(below)

    async def _delete_hard(self, unlist: bool) -> int:
        # Children are unlisted wholesale when this node's listing goes.
        below = await asyncio.gather(
            *(c._delete_hard(unlist=False) for c in await self.children(True))
        )
        stamp = now_stamp()
        erasing: list[Write] = [
            (_DELETE_NODE, (stamp, self.path)),
            (_REMOVE_ALL_CHILDREN, (stamp, self.path)),
            (_ERASE_BLOCKS, (stamp, self.path)),
        ]
        await self.database.execute_all(self._journaled(erasing, erased=True, stamp=stamp))
        if unlist:
            await self._unlist_from_parent()
        return 1 + sum(below)

    # -- copy and move -----------------------------------------------------------------

    async def copy_to(self, destination: str) -> RegistryNode:
        """Copy the node, its subtree, values and data blocks to ``destination``.

        The destination must not exist (a deleted one is overwritten) and cannot lie
        inside this node; its missing ancestors are created. Children that are listed
        but not created are not copied.
        """
        target = RegistryNode(self.database, destination)
        if is_within(target.path, self.path):
            raise InvalidPathError(target.path, f"it lies inside {self.path}, the node copied")
        state, target_status = await asyncio.gather(self.load(), target.status())
        if not state.exists:
            raise NodeNotFoundError(self.path)
        if target_status is NodeStatus.CREATED:
            raise NodeExistsError(target.path)
        preparing: list[Awaitable[object]] = [self._copy_contents_to(target)]
        if target.parent is not None:
            preparing.append(target.parent.check())
        await asyncio.gather(*preparing)
        await target._write_copy(state.values)
        return target

    async def move_to(self, destination: str) -> RegistryNode:
        """Copy to ``destination``, then soft-delete this node (the layout has no rename)."""
        target = await self.copy_to(destination)
        await self.delete()
        return target

    async def _copy_contents_to(self, target: RegistryNode) -> None:
        """Data blocks and created children (recursively) of this node, below ``target``."""
        children = await self.children(include_hidden=True)
        states = await asyncio.gather(*(child.load() for child in children))
        await asyncio.gather(
            self._copy_blocks_to(target),
            *(
                child._copy_subtree_to(target._listed_child(child.name), state)
                for child, state in zip(children, states, strict=True)
                if state.exists
            ),
        )

    async def _copy_subtree_to(self, target: RegistryNode, state: NodeState) -> None:
        await self._copy_contents_to(target)
        await target._write_copy(state.values)

    async def _write_copy(self, values: dict[str, str]) -> None:
        # The values replace the map: a deleted node left there keeps none of its own.
        # Blocks past the copied ones (an earlier, longer file) lie beyond the copied
        # file's size, so they are never read; a hard delete takes them.
        replacing = [(_SET_STATUS_REPLACE_VALUES, (NodeStatus.CREATED.value, values, self.path))]
        await asyncio.gather(
            self.database.execute_all(self._journaled(replacing)), self._list_in_parent()
        )

    async def _copy_blocks_to(self, target: RegistryNode) -> None:
        async for rows in self.database.pages(
            _SELECT_BLOCKS, (self.path,), page_size=_BLOCKS_PER_COPY_PAGE
        ):
            await asyncio.gather(*(target.write_block(row.block, row.data) for row in rows))

    # -- data blocks (raw; m2m.blobstore makes files of them) -----------------------------

    async def read_block(self, index: int) -> bytes | None:
        rows = await self.database.execute(_SELECT_BLOCK, (self.path, index))
        return rows[0].data if rows else None

    async def write_block(self, index: int, data: bytes) -> None:
        await self.database.execute(_WRITE_BLOCK, (self.path, index, data))
        BLOB_BYTES_STORED.inc(len(data))

    async def delete_blocks(self, first: int = 0) -> None:
        """Remove the data blocks numbered ``first`` and above (all of them by default)."""
        if first == 0:
            await self.database.execute(_DELETE_ALL_BLOCKS, (self.path,))
        else:
            await self.database.execute(_DELETE_BLOCKS_FROM, (self.path, first))


async def load_nodes(database: Database, nodes: Iterable[RegistryNode]) -> dict[str, NodeState]:
    """The state of each node, by path, read in one request (one partition per node).

    For a handful of nodes wanted together (a device's, when it connects): one request
    costs Cassandra about what that many would, and this process a fraction.
    """
    paths = list({node.path for node in nodes})
    rows = await database.execute(_SELECT_NODES, (paths,))
    found = {
        row.path: NodeState(NodeStatus.of_column(row.status), dict(row.values or {}))
        for row in rows
    }
    return {path: found.get(path, NodeState(NodeStatus.UNDEFINED, {})) for path in paths}


async def cleanup(database: Database) -> int:
    """Hard-delete every soft-deleted node (found by the index on status); how many."""
    removed = 0
    async for rows in database.pages(
        _SELECT_PATHS_BY_STATUS, (NodeStatus.DELETED.value,), page_size=_CHILDREN_PAGE_SIZE
    ):
        counts = await asyncio.gather(
            *(RegistryNode._stored(database, row.path)._delete_hard(unlist=True) for row in rows)
        )
        removed += sum(counts)
    return removed


async def _not_created(nodes: Sequence[RegistryNode]) -> list[RegistryNode]:
    statuses = await asyncio.gather(*(node.status() for node in nodes))
    return [
        node
        for node, status in zip(nodes, statuses, strict=True)
        if status is not NodeStatus.CREATED
    ]


async def _descendants(
    children: list[RegistryNode], depth: int, include_hidden: bool
) -> AsyncIterator[tuple[int, RegistryNode]]:
    grandchildren = await asyncio.gather(*(child.children(include_hidden) for child in children))
    for child, its_children in zip(children, grandchildren, strict=True):
        yield depth, child
        async for item in _descendants(its_children, depth + 1, include_hidden):
            yield item
