"""A blob's node: the values that describe its file, and what only needs them (stat, rm).

The value names are the original platform's, so both read each other's files:
``.is_file``, ``fname``, ``ftype``, ``fsize``, ``blsize`` and ``getOk``. A flag reads as
set when it is ``1`` (what this platform writes) or ``true`` (what older writers used).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from m2m.blobstore.errors import BlobNotFoundError, CorruptBlobError, NotABlobError
from m2m.cassandra import Database
from m2m.registry import NodeState, RegistryNode

IS_FILE = ".is_file"
NAME = "fname"
MIME_TYPE = "ftype"
SIZE = "fsize"
BLOCK_SIZE = "blsize"
COMPLETE = "getOk"
FLAG_SET = "1"

DEFAULT_BLOCK_SIZE = 512 * 1024
MAX_BLOCK_SIZE = 8 * 1024 * 1024
"""Well under Cassandra's default limits on a mutation and a native-protocol frame."""
DEFAULT_MIME_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class BlobStat:
    """What a file node says about its file."""

    name: str
    mime_type: str
    size: int
    block_size: int
    ok: bool
    """The last write finished: the content is whole."""

    @classmethod
    def of_node(cls, path: str, state: NodeState) -> BlobStat:
        """Raises if the node does not exist or is not a file."""
        if not state.exists:
            raise BlobNotFoundError(path)
        values = state.values
        if not is_flag_set(values.get(IS_FILE)):
            raise NotABlobError(path)
        return cls(
            name=values.get(NAME, ""),
            mime_type=values.get(MIME_TYPE, DEFAULT_MIME_TYPE),
            size=_number(path, values, SIZE, 0),
            block_size=stored_block_size(path, values) or DEFAULT_BLOCK_SIZE,
            ok=is_flag_set(values.get(COMPLETE)),
        )


def is_flag_set(value: str | None) -> bool:
    return value is not None and value.lower() in (FLAG_SET, "true")


def stored_block_size(path: str, values: Mapping[str, str]) -> int | None:
    """The block size the node's data was written with, if any (it never changes)."""
    if BLOCK_SIZE not in values:
        return None
    block_size = _number(path, values, BLOCK_SIZE, 0)
    if not 0 < block_size <= MAX_BLOCK_SIZE:
        raise CorruptBlobError(f"file {path}: block size {block_size} is out of range")
    return block_size


def _number(path: str, values: Mapping[str, str], name: str, default: int) -> int:
    text = values.get(name)
    if text is None:
        return default
    try:
        number = int(text)
    except ValueError:
        raise CorruptBlobError(f"file {path}: value {name}={text!r} is not a number") from None
    if number < 0:
        raise CorruptBlobError(f"file {path}: value {name}={text!r} is negative")
    return number


async def stat_blob(database: Database, path: str) -> BlobStat:
    node = RegistryNode(database, path)
    return BlobStat.of_node(node.path, await node.load())


async def delete_blob(database: Database, path: str) -> None:
    """Remove the file's node and data for good (hard delete, subtree included)."""
    node = RegistryNode(database, path)
    BlobStat.of_node(node.path, await node.load())
    await node.delete(hard=True)
