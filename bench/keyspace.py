"""A throw-away keyspace for a benchmark run: the configured one with a random suffix."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from m2m.config import CassandraConfig, Config
from m2m.schema import apply_schema, drop_keyspace


@contextmanager
def throwaway_keyspace(configured: CassandraConfig) -> Iterator[CassandraConfig]:
    """The configuration of a fresh keyspace with the schema applied, dropped afterwards."""
    config = configured.model_copy(
        update={"keyspace": f"{configured.keyspace}_bench_{uuid.uuid4().hex[:8]}"}
    )
    apply_schema(config)
    try:
        yield config
    finally:
        drop_keyspace(config)


@contextmanager
def bench_workspace(configured: Config, prefix: str) -> Iterator[tuple[Config, Path]]:
    """``configured`` on a throw-away keyspace, and a temporary directory (``prefix…``)
    for the run's files; both removed afterwards."""
    with (
        throwaway_keyspace(configured.cassandra) as cassandra,
        tempfile.TemporaryDirectory(prefix=prefix) as directory,
    ):
        yield configured.model_copy(update={"cassandra": cassandra}), Path(directory)
