"""Fixtures on the real local stack: Cassandra and NSQ started by ``m2m stack up``.

Each test run gets a fresh keyspace (dropped at the end), described by a config file that
both in-process code and ``m2m`` subprocesses use, so tests see what a user would see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from m2m.cassandra import Database, connect_session
from m2m.config import Config, load_config

M2M = str(Path(sys.executable).parent / "m2m")


def run_m2m(
    *args: str, config: Path | None = None, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the ``m2m`` command as a person would; output captured."""
    command = [M2M, *(["--config", str(config)] if config else []), *args]
    result = subprocess.run(command, capture_output=True, input=input, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
        )
    return result


@pytest.fixture(scope="session")
def stack() -> None:
    """The local stack, up and healthy (started if needed; left running for the next run)."""
    run_m2m("stack", "up")


@pytest.fixture(scope="session")
def config_file(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A config file naming a fresh keyspace with the schema applied."""
    keyspace = f"m2m_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    path = tmp_path_factory.mktemp("config") / "m2m.yaml"
    path.write_text(yaml.safe_dump({"cassandra": {"keyspace": keyspace}}))
    run_m2m("schema", "apply", config=path)
    yield path
    config = load_config(path)
    cluster, session = connect_session(config.cassandra)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def config(config_file: Path) -> Config:
    return load_config(config_file)


@pytest.fixture(scope="session")
def _session(config: Config) -> Iterator[tuple[object, object]]:
    cluster, session = connect_session(config.cassandra, config.cassandra.keyspace)
    yield cluster, session
    cluster.shutdown()


@pytest.fixture
def database(config: Config, _session: tuple[object, object]) -> Database:
    """A Database on the test keyspace (one driver session shared by the whole run)."""
    cluster, session = _session
    return Database(cluster, session, config.cassandra.max_in_flight)  # type: ignore[arg-type]
