"""A blob as an async file: read, write, seek and truncate anywhere, without loading it all.

The content lives in the node's data blocks ``0..n``, each ``block_size`` bytes except the
last, which holds only what the file has. The file keeps one block in memory, the
*current* one: reads inside it (a receiver sending firmware in 512-byte pieces) cost no
request, and small writes gather in it until the position leaves it, then it is written
whole. A write covering a whole block is sent as it is, without reading what it
replaces, and without waiting: up to ``WRITE_WINDOW`` block writes are in flight
(:class:`~m2m.blobstore.pipeline.BlockWriter`). Reads spanning several blocks fetch up to
``READ_WINDOW`` blocks ahead.

A file open for writing is marked incomplete (``getOk`` unset) before anything is written
and complete only once :meth:`BlobFile.close` has written its last block and its size:
an upload that dies half-way, or whose ``async with`` block raises, stays incomplete, and
readers refuse it. Writing past the end fills the gap with zeros, so every block below
the size exists, as the original platform's readers expect.

A BlobFile belongs to one task at a time: it is not safe to share between concurrent tasks.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncGenerator, Coroutine, Generator
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from m2m.blobstore.errors import BlobError, CorruptBlobError, IncompleteBlobError
from m2m.blobstore.metadata import (
    BLOCK_SIZE,
    COMPLETE,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MIME_TYPE,
    FLAG_SET,
    IS_FILE,
    MAX_BLOCK_SIZE,
    MIME_TYPE,
    NAME,
    SIZE,
    BlobStat,
    stored_block_size,
)
from m2m.blobstore.pipeline import BlockWriter, read_ahead
from m2m.cassandra import Database
from m2m.registry import RegistryNode

Mode = Literal["r", "r+", "w"]
"""``r`` read a complete file; ``r+`` read and write an existing one; ``w`` start it empty."""

WRITE_WINDOW = 8
READ_WINDOW = 8


@dataclass
class _CurrentBlock:
    index: int
    data: bytes | bytearray
    dirty: bool = False


class BlobFile:
    """An open blob; get one with :func:`open_blob`."""

    def __init__(self, node: RegistryNode, stat: BlobStat, mode: Mode) -> None:
        self.node = node
        self.name = stat.name
        self.mime_type = stat.mime_type
        self.block_size = stat.block_size
        self.mode = mode
        self._size = stat.size
        self._position = 0
        self._current: _CurrentBlock | None = None
        self._writer = BlockWriter(node, WRITE_WINDOW) if mode != "r" else None
        self._closed = False

    @property
    def path(self) -> str:
        return self.node.path

    @property
    def size(self) -> int:
        """The size as this file object sees it, writes not yet flushed included."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"BlobFile({self.path!r}, mode={self.mode!r}, size={self._size})"

    async def __aenter__(self) -> BlobFile:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abandon()

    # -- position ----------------------------------------------------------------------

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (no request is sent); past the end is allowed, as for files."""
        self._check_open()
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}
        if whence not in origin:
            raise ValueError(f"invalid whence {whence} (SEEK_SET, SEEK_CUR or SEEK_END)")
        position = origin[whence] + offset
        if position < 0:
            raise ValueError(f"cannot seek to a negative position ({position})")
        self._position = position
        return position

    # -- reading -----------------------------------------------------------------------

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the position (all the rest if negative); moves it."""
        self._check_open()
        wanted = max(self._size - self._position, 0) if size < 0 else size
        data = await self.read_at(self._position, wanted)
        self._position += len(data)
        return data

    async def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, leaving the position alone (a range read)."""
        self._check_open()
        if offset < 0 or size < 0:
            raise ValueError(f"cannot read {size} bytes at offset {offset}")
        end = min(offset + size, self._size)
        if end <= offset:
            return b""
        index, start = divmod(offset, self.block_size)
        if end - offset <= self.block_size - start:
            block = await self._block(index)
            return bytes(block[start : start + end - offset])
        return b"".join([piece async for piece in self._pieces(offset, end)])

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The rest of the file from the position, a block at a time; moves the position."""
        self._check_open()
        async with aclosing(self._pieces(self._position, self._size)) as pieces:
            async for piece in pieces:
                self._position += len(piece)
                yield piece

    async def _pieces(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """The bytes in [start, end), block by block, read ahead."""
        if end <= start:
            return
        await self._settle_writes()
        first, last = start // self.block_size, (end - 1) // self.block_size
        blocks = read_ahead(self._fetch_block, range(first, last + 1), READ_WINDOW)
        async with aclosing(blocks):
            async for index, block in blocks:
                self._current = _CurrentBlock(index, block)
                block_start = index * self.block_size
                yield bytes(block[max(start - block_start, 0) : end - block_start])

    async def _block(self, index: int) -> bytes | bytearray:
        current = self._current
        if current is not None and current.index == index:
            return current.data
        data = await self._fetch_block(index)
        await self._replace_current(_CurrentBlock(index, data))
        return data

    async def _fetch_block(self, index: int) -> bytes:
        if self._writer is not None:
            await self._writer.wait_for(index)
        data = await self.node.read_block(index)
        expected = self._stored_length(index)
        if data is None or len(data) < expected:
            found = "missing" if data is None else f"{len(data)} bytes"
            raise CorruptBlobError(
                f"file {self.path}: block {index} should hold {expected} bytes, found {found}"
            )
        return data[:expected] if len(data) > expected else data

    def _stored_length(self, index: int) -> int:
        """How many bytes block ``index`` holds for the current size."""
        return max(0, min(self.block_size, self._size - index * self.block_size))

    # -- writing -----------------------------------------------------------------------

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write at the position (filling any gap past the end with zeros); moves it."""
        self._check_writable()
        written = await self._write_at(self._position, data)
        self._position += written
        return written

    async def truncate(self, size: int | None = None) -> int:
        """Cut (or zero-extend) the file to ``size`` bytes, the position by default."""
        self._check_writable()
        new_size = self._position if size is None else size
        if new_size < 0:
            raise ValueError(f"cannot truncate to a negative size ({new_size})")
        if new_size > self._size:
            await self._fill_with_zeros(new_size)
        elif new_size < self._size:
            await self._shrink(new_size)
        return new_size

    async def flush(self) -> None:
        """Write the current block, wait for every block write, record the size."""
        self._check_writable()
        await self._settle_writes()
        await self.node.set_values({SIZE: str(self._size)})

    async def close(self) -> None:
        """Finish writing and mark the file complete (``getOk``); closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._settle_writes()
            await self.node.set_values({SIZE: str(self._size), COMPLETE: FLAG_SET})

    async def abandon(self) -> None:
        """Close without finishing: writes in flight settle, the file stays incomplete."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._writer.abandon()

    async def _write_at(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset``; how many bytes that was."""
        if offset > self._size:
            await self._fill_with_zeros(offset)
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            index, start = divmod(offset, self.block_size)
            piece = view[: self.block_size - start]
            if len(piece) == self.block_size:
                # Writers usually hand over whole blocks as bytes: send those uncopied.
                uncopied = data if isinstance(data, bytes) and len(data) == len(piece) else None
                await self._write_whole_block(index, uncopied or bytes(piece))
            else:
                await self._patch_block(index, start, piece)
            offset += len(piece)
            view = view[len(piece) :]
            self._size = max(self._size, offset)
        return written

    async def _write_whole_block(self, index: int, data: bytes) -> None:
        assert self._writer is not None
        if self._current is not None and self._current.index == index:
            self._current = None  # replaced entirely: its pending changes are moot
        await self._writer.submit(index, data)

    async def _patch_block(self, index: int, start: int, piece: memoryview) -> None:
        current = self._current
        if current is None or current.index != index:
            replaces_all_it_holds = start == 0 and len(piece) >= self._stored_length(index)
            data = b"" if replaces_all_it_holds else await self._fetch_block(index)
            current = _CurrentBlock(index, data)
            await self._replace_current(current)
        if not isinstance(current.data, bytearray):
            current.data = bytearray(current.data)
        current.data[start : start + len(piece)] = piece
        current.dirty = True

    async def _fill_with_zeros(self, end: int) -> None:
        """Extend the file from its size to ``end`` with zeros, a block at a time."""
        while self._size < end:
            room = self.block_size - self._size % self.block_size
            await self._write_at(self._size, bytes(min(room, end - self._size)))

    async def _shrink(self, new_size: int) -> None:
        await self._settle_writes()
        kept_blocks = -(-new_size // self.block_size)
        if self._current is not None and self._current.index >= kept_blocks:
            self._current = None
        last = kept_blocks - 1
        if last >= 0 and self._stored_length(last) > new_size - last * self.block_size:
            block = await self._block(last)
            await self._replace_current(
                _CurrentBlock(last, block[: new_size - last * self.block_size], dirty=True)
            )
        await self.node.delete_blocks(first=kept_blocks)
        self._size = new_size

    async def _replace_current(self, block: _CurrentBlock) -> None:
        """Make ``block`` the current one, sending the previous one's changes on their way."""
        previous = self._current
        self._current = block
        if previous is not None and previous.dirty and previous.index != block.index:
            assert self._writer is not None
            await self._writer.submit(previous.index, bytes(previous.data))

    async def _settle_writes(self) -> None:
        """Every change sent and landed: the blocks in Cassandra are the file's content."""
        if self._writer is None:
            return
        current = self._current
        if current is not None and current.dirty:
            await self._writer.submit(current.index, bytes(current.data))
            current.dirty = False
        await self._writer.drain()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"file {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._writer is None:
            raise io.UnsupportedOperation(f"file {self.path} is open for reading only")


class OpeningBlob:
    """What :func:`open_blob` returns: await it for the file, or use it with ``async with``."""

    def __init__(self, opening: Coroutine[Any, Any, BlobFile]) -> None:
        self._opening = opening
        self._file: BlobFile | None = None

    def __await__(self) -> Generator[Any, None, BlobFile]:
        return self._opening.__await__()

    async def __aenter__(self) -> BlobFile:
        self._file = await self._opening
        return self._file

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._file is not None
        await self._file.__aexit__(exc_type, exc, traceback)


def open_blob(
    database: Database,
    path: str,
    mode: Mode = "r",
    *,
    name: str | None = None,
    mime_type: str | None = None,
    block_size: int | None = None,
) -> OpeningBlob:
    """Open the file at ``path``: ``async with open_blob(db, path, "w") as blob: ...``.

    ``r`` refuses an incomplete file (:class:`IncompleteBlobError`). ``r+`` and ``w`` mark
    it incomplete until closed. ``w`` creates the node if needed and empties the file;
    ``name`` (default: the existing one, else the node's name), ``mime_type`` (default:
    the existing one, else ``application/octet-stream``) and ``block_size`` (default
    524288) apply to it. A file's block size never changes once set: asking for another
    one raises :class:`~m2m.blobstore.errors.BlobError`.
    """
    node = RegistryNode(database, path)
    if mode == "w":
        return OpeningBlob(_create(node, name, mime_type, block_size))
    if mode in ("r", "r+"):
        return OpeningBlob(_open_existing(node, mode))
    raise ValueError(f"invalid mode {mode!r} (r, r+ or w)")


async def _open_existing(node: RegistryNode, mode: Mode) -> BlobFile:
    stat = BlobStat.of_node(node.path, await node.load())
    if mode == "r" and not stat.ok:
        raise IncompleteBlobError(node.path)
    if mode == "r+":
        await node.delete_value(COMPLETE)
    return BlobFile(node, stat, mode)


async def _create(
    node: RegistryNode, name: str | None, mime_type: str | None, block_size: int | None
) -> BlobFile:
    values = (await node.load()).values
    fixed_block_size = stored_block_size(node.path, values)
    if block_size is not None:
        if not 0 < block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block size must be between 1 and {MAX_BLOCK_SIZE} bytes")
        if fixed_block_size is not None and block_size != fixed_block_size:
            raise BlobError(f"file {node.path} has block size {fixed_block_size}; it cannot change")
    stat = BlobStat(
        name=name or values.get(NAME) or node.name,
        mime_type=mime_type or values.get(MIME_TYPE) or DEFAULT_MIME_TYPE,
        size=0,
        block_size=fixed_block_size or block_size or DEFAULT_BLOCK_SIZE,
        ok=False,
    )
    await asyncio.gather(
        node.check(),
        node.set_values(
            {
                IS_FILE: FLAG_SET,
                NAME: stat.name,
                MIME_TYPE: stat.mime_type,
                SIZE: "0",
                BLOCK_SIZE: str(stat.block_size),
            }
        ),
        node.delete_value(COMPLETE),
        node.delete_blocks(),
    )
    return BlobFile(node, stat, "w")
