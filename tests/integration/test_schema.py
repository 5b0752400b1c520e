"""The schema: applied idempotently, with the original platform's tables unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from m2m.cassandra import DatabaseError, connect_session
from m2m.config import Config, load_config
from m2m.schema import VERSION_TABLE, load_migrations, replication_cql
from tests.conftest import run_m2m

# (column, kind, position, type, clustering order) as system_schema.columns describes them.
EXPECTED_TABLES: dict[str, set[tuple[str, str, int, str, str]]] = {
    "registrynode": {
        ("path", "partition_key", 0, "text", "none"),
        ("status", "regular", -1, "int", "none"),
        ("values", "regular", -1, "map<text, text>", "none"),
    },
    "registrynodechildren": {
        ("path", "partition_key", 0, "text", "none"),
        ("name", "clustering", 0, "text", "asc"),
    },
    "registrynodedata": {
        ("path", "partition_key", 0, "text", "none"),
        ("block", "clustering", 0, "int", "asc"),
        ("data", "regular", -1, "blob", "none"),
    },
    "timeseries": {
        ("id", "partition_key", 0, "text", "none"),
        ("date", "partition_key", 1, "text", "none"),
        ("time", "clustering", 0, "timeuuid", "desc"),
        ("type", "regular", -1, "text", "none"),
        ("data", "regular", -1, "text", "none"),
    },
    "timeseries_index": {
        ("id", "partition_key", 0, "text", "none"),
        ("type", "partition_key", 1, "text", "none"),
        ("date", "clustering", 0, "text", "desc"),
    },
}


def _rows(config: Config, cql: str, *params: Any) -> list[Any]:
    cluster, session = connect_session(config.cassandra)
    try:
        return list(session.execute(cql, params))
    finally:
        cluster.shutdown()


def test_applying_again_changes_nothing(config_file: Path) -> None:
    result = run_m2m("schema", "apply", config=config_file)
    assert result.stdout.decode().strip().endswith("schema is up to date")


def test_the_five_tables_have_the_specified_keys_and_the_journal_is_the_only_addition(
    config: Config,
) -> None:
    rows = _rows(
        config,
        "SELECT table_name, column_name, kind, position, type, clustering_order "
        "FROM system_schema.columns WHERE keyspace_name = %s",
        config.cassandra.keyspace,
    )
    found: dict[str, set[tuple[str, str, int, str, str]]] = {}
    for r in rows:
        found.setdefault(r.table_name, set()).add(
            (r.column_name, r.kind, r.position, r.type, r.clustering_order)
        )
    for table, columns in EXPECTED_TABLES.items():
        assert found[table] == columns, table
    assert set(found) == {*EXPECTED_TABLES, VERSION_TABLE, "registry_journal"}
    assert found["registry_journal"] == {
        ("minute", "partition_key", 0, "bigint", "none"),
        ("time", "clustering", 0, "timeuuid", "asc"),
        ("path", "regular", -1, "text", "none"),
        ("stamp", "regular", -1, "bigint", "none"),
        ("removed", "regular", -1, "set<text>", "none"),
        ("erased", "regular", -1, "boolean", "none"),
    }
    indexes = _rows(
        config,
        "SELECT table_name, options FROM system_schema.indexes WHERE keyspace_name = %s",
        config.cassandra.keyspace,
    )
    assert sorted((i.table_name, i.options["target"]) for i in indexes) == [
        ("registrynode", "status"),
        ("timeseries_index", "id"),
    ]


def test_status_reports_the_version_and_agreement(config_file: Path) -> None:
    out = run_m2m("schema", "status", config=config_file).stdout.decode()
    latest = max(m.version for m in load_migrations())
    assert f"version {latest} (latest {latest})" in out
    assert "nodes agree" in out


def test_a_keyspace_of_the_original_platform_is_accepted_as_it_is(
    stack: None, tmp_path: Path
) -> None:
    keyspace = f"m2m_original_{tmp_path.name[-8:].replace('-', '_')}"
    config_file = tmp_path / "m2m.yaml"
    config_file.write_text(yaml.safe_dump({"cassandra": {"keyspace": keyspace}}))
    config = load_config(config_file)
    cluster, session = connect_session(config.cassandra)
    try:
        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.set_keyspace(keyspace)
        # As the original platform created them, index name of its own included.
        session.execute(
            "CREATE TABLE registrynode (path text PRIMARY KEY, status int, values map<text,text>)"
        )
        session.execute("CREATE INDEX registrynode_status ON registrynode (status)")
        session.execute(
            "CREATE TABLE timeseries (id text, date text, time timeuuid, "
            "type text, data text, PRIMARY KEY ((id, date), time)) "
            "WITH CLUSTERING ORDER BY (time DESC)"
        )
        session.execute("INSERT INTO registrynode (path, status) VALUES ('/device/', 100)")
        result = run_m2m("schema", "apply", config=config_file)
        assert "applied version 1" in result.stdout.decode()
        assert "applied version 2" in result.stdout.decode()
        assert session.execute("SELECT status FROM registrynode WHERE path = '/device/'").one()
        indexes = list(
            session.execute(
                "SELECT index_name FROM system_schema.indexes WHERE keyspace_name = %s", (keyspace,)
            )
        )
        assert sorted(i.index_name for i in indexes) == [
            "registrynode_status",
            "timeseries_index_by_id",
        ]
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        cluster.shutdown()


@pytest.mark.parametrize(
    ("replication", "cql"),
    [
        ({"class": "SimpleStrategy", "replication_factor": 1},
         "{'class': 'SimpleStrategy', 'replication_factor': '1'}"),
        ({"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": "2"},
         "{'class': 'NetworkTopologyStrategy', 'dc1': '3', 'dc2': '2'}"),
    ],
)  # fmt: skip
def test_replication_from_config(replication: dict[str, str | int], cql: str) -> None:
    assert replication_cql(replication) == cql


@pytest.mark.parametrize(
    "replication",
    [
        {"class": "LocalStrategy", "replication_factor": 1},
        {"class": "SimpleStrategy", "dc1": 1},
        {"class": "NetworkTopologyStrategy"},
        {"class": "NetworkTopologyStrategy", "dc1": 0},
        {"class": "NetworkTopologyStrategy", "dc1": "three"},
    ],
)
def test_bad_replication_is_refused(replication: dict[str, str | int]) -> None:
    with pytest.raises(DatabaseError):
        replication_cql(replication)
