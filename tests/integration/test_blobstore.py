"""Blobs on the real Cassandra: content byte for byte, random access, truncation, and
uploads that never finished."""

from __future__ import annotations

import io
import os
import random
import uuid

import pytest

from m2m.blobstore import (
    DEFAULT_BLOCK_SIZE,
    BlobError,
    BlobFile,
    BlobNotFoundError,
    IncompleteBlobError,
    NotABlobError,
    delete_blob,
    open_blob,
    stat_blob,
)
from m2m.cassandra import Database
from m2m.registry import RegistryNode

MiB = 1024 * 1024


@pytest.fixture
def path() -> str:
    return f"/test-blob-{uuid.uuid4().hex[:12]}/file/"


async def _block_lengths(database: Database, path: str) -> list[int]:
    rows = await database.execute(
        "SELECT block, data FROM registrynodedata WHERE path = ?", (path,)
    )
    assert [row.block for row in rows] == list(range(len(rows)))
    return [len(row.data) for row in rows]


async def _content(database: Database, path: str) -> bytes:
    async with open_blob(database, path) as blob:
        return await blob.read()


@pytest.mark.parametrize(
    "size",
    [0, 1, DEFAULT_BLOCK_SIZE, DEFAULT_BLOCK_SIZE + 1, 5 * MiB],
    ids=["empty", "one-byte", "one-block", "one-block-and-a-byte", "5MiB"],
)
async def test_content_round_trips_byte_for_byte(database: Database, path: str, size: int) -> None:
    content = os.urandom(size)
    async with open_blob(database, path, "w", name="fw.bin", mime_type="x/fw") as blob:
        assert await blob.write(content) == size

    stat = await stat_blob(database, path)
    assert (stat.name, stat.mime_type, stat.size, stat.block_size, stat.ok) == (
        "fw.bin",
        "x/fw",
        size,
        DEFAULT_BLOCK_SIZE,
        True,
    )
    whole, last = divmod(size, DEFAULT_BLOCK_SIZE)
    assert await _block_lengths(database, path) == [DEFAULT_BLOCK_SIZE] * whole + (
        [last] if last else []
    )
    assert await _content(database, path) == content
    async with open_blob(database, path) as blob:
        chunks = [chunk async for chunk in blob.chunks()]
    assert b"".join(chunks) == content
    assert all(len(chunk) == DEFAULT_BLOCK_SIZE for chunk in chunks[:-1])


async def test_small_writes_gather_into_blocks(database: Database, path: str) -> None:
    content = os.urandom(100_000)
    async with open_blob(database, path, "w", block_size=4096) as blob:
        for start in range(0, len(content), 777):
            await blob.write(content[start : start + 777])
    assert await _block_lengths(database, path) == [4096] * 24 + [100_000 - 24 * 4096]
    assert await _content(database, path) == content


async def test_the_node_is_marked_as_a_file_with_the_platform_value_names(
    database: Database, path: str
) -> None:
    async with open_blob(database, path, "w", block_size=1000) as blob:
        await blob.write(b"abc")
    assert await RegistryNode(database, path).values() == {
        ".is_file": "1",
        "fname": "file",
        "ftype": "application/octet-stream",
        "fsize": "3",
        "blsize": "1000",
        "getOk": "1",
    }


async def test_writes_inside_and_across_blocks_rewrite_only_what_they_cover(
    database: Database, path: str
) -> None:
    expected = bytearray(os.urandom(50))
    async with open_blob(database, path, "w", block_size=10) as blob:
        await blob.write(expected)
    async with open_blob(database, path, "r+") as blob:
        for offset, data in [(3, b"in"), (8, b"across-two"), (19, b"xy"), (0, b"A" * 10)]:
            assert blob.seek(offset) == offset
            await blob.write(data)
            assert blob.tell() == offset + len(data)
            expected[offset : offset + len(data)] = data
        blob.seek(0)
        assert await blob.read() == expected, "reads see writes not yet flushed"
    assert await _content(database, path) == expected
    assert await _block_lengths(database, path) == [10] * 5


async def test_writing_past_the_end_fills_the_gap_with_zeros(database: Database, path: str) -> None:
    async with open_blob(database, path, "w", block_size=8) as blob:
        await blob.write(b"abc")
        blob.seek(20)
        await blob.write(b"Z")
    assert await _content(database, path) == b"abc" + bytes(17) + b"Z"
    assert await _block_lengths(database, path) == [8, 8, 5]


async def test_seek_from_each_origin_and_its_errors(database: Database, path: str) -> None:
    async with open_blob(database, path, "w", block_size=4) as blob:
        await blob.write(b"0123456789")
        assert blob.seek(-3, io.SEEK_END) == 7
        assert await blob.read(2) == b"78"
        assert blob.seek(-5, io.SEEK_CUR) == 4
        assert await blob.read(3) == b"456"
        assert await blob.read_at(1, 4) == b"1234"
        assert blob.tell() == 7, "read_at leaves the position alone"
        assert await blob.read(100) == b"789"
        assert await blob.read() == b""
        with pytest.raises(ValueError, match="negative"):
            blob.seek(-1)
        with pytest.raises(ValueError, match="whence"):
            blob.seek(0, 7)


@pytest.mark.parametrize(
    ("new_size", "block_lengths"),
    [(25, [10, 10, 5]), (20, [10, 10]), (7, [7]), (0, [])],
    ids=["inside-a-block", "on-a-boundary", "across-blocks", "to-nothing"],
)
async def test_truncate_drops_the_blocks_past_the_size_and_trims_the_last(
    database: Database, path: str, new_size: int, block_lengths: list[int]
) -> None:
    content = os.urandom(47)
    async with open_blob(database, path, "w", block_size=10) as blob:
        await blob.write(content)
    async with open_blob(database, path, "r+") as blob:
        assert await blob.truncate(new_size) == new_size
        assert blob.size == new_size
    assert await _block_lengths(database, path) == block_lengths
    assert await _content(database, path) == content[:new_size]
    assert (await stat_blob(database, path)).size == new_size


async def test_truncate_at_the_position_and_growing_with_zeros(
    database: Database, path: str
) -> None:
    async with open_blob(database, path, "w", block_size=10) as blob:
        await blob.write(b"x" * 15)
        blob.seek(12)
        assert await blob.truncate() == 12
        assert await blob.truncate(31) == 31
        assert blob.tell() == 12, "truncate does not move the position"
    assert await _content(database, path) == b"x" * 12 + bytes(19)
    assert await _block_lengths(database, path) == [10, 10, 10, 1]


async def test_random_operations_agree_with_an_in_memory_file(
    database: Database, path: str
) -> None:
    """Seeks, reads, writes and truncates of any size, checked against io.BytesIO."""
    chooser = random.Random(20240601)
    model = io.BytesIO()
    async with open_blob(database, path, "w", block_size=16) as blob:
        for _ in range(300):
            operation = chooser.choice(["write", "write", "read", "seek", "truncate"])
            if operation == "write":
                data = os.urandom(chooser.choice([1, 5, 16, 17, 40]))
                assert await blob.write(data) == model.write(data)
            elif operation == "read":
                size = chooser.randrange(-1, 50)
                assert await blob.read(size) == model.read(size)
            elif operation == "seek":
                target = chooser.randrange(0, model.getbuffer().nbytes + 20)
                assert blob.seek(target) == model.seek(target)
            else:
                size = chooser.randrange(0, model.getbuffer().nbytes + 20)
                assert await blob.truncate(size) == model.truncate(size)
                model.seek(0, io.SEEK_END)
                if model.tell() < size:  # BytesIO does not grow on truncate; files do
                    model.write(bytes(size - model.tell()))
                model.seek(blob.tell())
            assert blob.tell() == model.tell()
    assert await _content(database, path) == model.getvalue()


async def test_range_reads_in_small_pieces_come_from_the_current_block(
    database: Database, path: str
) -> None:
    content = os.urandom(3000)
    async with open_blob(database, path, "w", block_size=1024) as blob:
        await blob.write(content)
    node = RegistryNode(database, path)
    async with open_blob(database, path) as blob:
        assert await blob.read_at(0, 512) == content[:512]
        await node.delete_blocks()  # the rest of block 0 must not need Cassandra any more
        assert await blob.read_at(512, 512) == content[512:1024]
        with pytest.raises(BlobError, match="block 1 should hold 1024 bytes, found missing"):
            await blob.read_at(1024, 512)


async def test_a_write_never_closed_leaves_the_file_incomplete(
    database: Database, path: str
) -> None:
    blob = await open_blob(database, path, "w")
    await blob.write(os.urandom(3 * DEFAULT_BLOCK_SIZE))
    assert not (await stat_blob(database, path)).ok
    with pytest.raises(IncompleteBlobError, match="incomplete"):
        await open_blob(database, path)
    await blob.close()
    assert (await stat_blob(database, path)).ok


async def test_an_error_inside_the_context_leaves_the_file_incomplete(
    database: Database, path: str
) -> None:
    async with open_blob(database, path, "w") as blob:
        await blob.write(b"complete")
    with pytest.raises(RuntimeError, match="upload broke"):
        async with open_blob(database, path, "w") as blob:
            await blob.write(os.urandom(DEFAULT_BLOCK_SIZE + 10))
            raise RuntimeError("upload broke")
    assert blob.closed
    assert not (await stat_blob(database, path)).ok
    with pytest.raises(IncompleteBlobError):
        await _content(database, path)


async def test_editing_in_place_is_incomplete_until_closed(database: Database, path: str) -> None:
    async with open_blob(database, path, "w") as blob:
        await blob.write(b"abc")
    edited = await open_blob(database, path, "r+")
    assert not (await stat_blob(database, path)).ok
    await edited.write(b"X")
    await edited.close()
    assert await _content(database, path) == b"Xbc"


async def test_rewriting_keeps_the_block_size_and_refuses_another(
    database: Database, path: str
) -> None:
    async with open_blob(database, path, "w", block_size=100) as blob:
        await blob.write(os.urandom(450))
    async with open_blob(database, path, "w") as blob:
        assert blob.block_size == 100
        await blob.write(b"short")
    assert await _block_lengths(database, path) == [5], "the old blocks are gone"
    with pytest.raises(BlobError, match="block size 100; it cannot change"):
        await open_blob(database, path, "w", block_size=200)


async def test_read_only_files_refuse_writes_and_closed_files_refuse_everything(
    database: Database, path: str
) -> None:
    async with open_blob(database, path, "w") as blob:
        await blob.write(b"abc")
    reader: BlobFile = await open_blob(database, path)
    with pytest.raises(io.UnsupportedOperation):
        await reader.write(b"x")
    with pytest.raises(io.UnsupportedOperation):
        await reader.truncate(0)
    await reader.close()
    with pytest.raises(ValueError, match="closed"):
        await reader.read()


async def test_missing_nodes_and_nodes_that_are_not_files(database: Database, path: str) -> None:
    with pytest.raises(BlobNotFoundError, match="no file at"):
        await open_blob(database, path)
    with pytest.raises(BlobNotFoundError):
        await stat_blob(database, path)
    await RegistryNode(database, path).create()
    with pytest.raises(NotABlobError, match="is not a file"):
        await open_blob(database, path, "r+")
    with pytest.raises(NotABlobError):
        await delete_blob(database, path)


async def test_delete_removes_the_node_and_its_blocks(database: Database, path: str) -> None:
    async with open_blob(database, path, "w", block_size=10) as blob:
        await blob.write(os.urandom(35))
    await delete_blob(database, path)
    assert await _block_lengths(database, path) == []
    with pytest.raises(BlobNotFoundError):
        await stat_blob(database, path)


async def test_a_copied_file_node_reads_the_same(database: Database, path: str) -> None:
    content = os.urandom(2 * DEFAULT_BLOCK_SIZE + 3)
    async with open_blob(database, path, "w") as blob:
        await blob.write(content)
    node = RegistryNode(database, path)
    assert node.parent is not None
    copy = await node.copy_to(node.parent.child("copy").path)
    assert await _content(database, copy.path) == content
