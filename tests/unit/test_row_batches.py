"""How waiting rows are cut into unlogged batches: within Cassandra's warning thresholds."""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from m2m.cassandra import MAX_BATCH_BYTES, MAX_BATCH_PARTITIONS, _Row, _take_batch, _Writes


def rows(*spec: tuple[bytes, int]) -> deque[_Row]:
    """Rows of (partition, size); statement and writer do not matter to the cut."""
    writes = cast(_Writes, None)
    return deque(_Row(cast(Any, None), partition, size, writes) for partition, size in spec)


def cut(queue: deque[_Row]) -> list[list[bytes | None]]:
    batches = []
    while queue:
        batches.append([row.partition for row in _take_batch(queue)])
    return batches


def test_rows_of_few_partitions_share_one_batch() -> None:
    queue = rows(*[(b"a", 100), (b"b", 100)] * 10)
    assert cut(queue) == [[b"a", b"b"] * 10]


def test_a_batch_spans_at_most_the_partitions_cassandra_accepts_silently() -> None:
    queue = rows(*[(bytes([n]), 10) for n in range(MAX_BATCH_PARTITIONS * 2 + 3)])
    sizes = [len(batch) for batch in cut(queue)]
    assert sizes == [MAX_BATCH_PARTITIONS, MAX_BATCH_PARTITIONS, 3]


def test_rows_of_a_partition_already_in_the_batch_join_it_past_the_partition_limit() -> None:
    spread = [(bytes([n]), 10) for n in range(MAX_BATCH_PARTITIONS)]
    queue = rows(*spread, (b"\x00", 10), (b"new", 10))
    assert cut(queue) == [[p for p, _ in spread] + [b"\x00"], [b"new"]]


def test_a_batch_stays_under_the_size_cassandra_warns_about() -> None:
    row_size = MAX_BATCH_BYTES // 3 + 1
    queue = rows(*[(b"a", row_size)] * 5)
    assert [len(batch) for batch in cut(queue)] == [2, 2, 1]


def test_a_row_bigger_than_a_batch_goes_alone() -> None:
    queue = rows((b"a", 10), (b"big", MAX_BATCH_BYTES * 4), (b"a", 10))
    assert cut(queue) == [[b"a"], [b"big"], [b"a"]]
