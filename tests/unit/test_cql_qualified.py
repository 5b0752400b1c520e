"""Statements reach Cassandra with their tables qualified by the keyspace (no ``USE``)."""

from __future__ import annotations

import pytest

from m2m.cassandra import qualified


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        (
            "SELECT status, values FROM registrynode WHERE path = ?",
            "SELECT status, values FROM ks.registrynode WHERE path = ?",
        ),
        (
            "INSERT INTO timeseries (id, type, data) VALUES (?, ?, ?) USING TTL ?",
            "INSERT INTO ks.timeseries (id, type, data) VALUES (?, ?, ?) USING TTL ?",
        ),
        (
            "UPDATE registrynode SET values = values + ? WHERE path = ?",
            "UPDATE ks.registrynode SET values = values + ? WHERE path = ?",
        ),
        (
            "DELETE FROM registrynodedata WHERE path = ? AND block >= ?",
            "DELETE FROM ks.registrynodedata WHERE path = ? AND block >= ?",
        ),
        (
            "select id, date from timeseries where id in ? and date = ? per partition limit 1",
            "select id, date from ks.timeseries where id in ? and date = ? per partition limit 1",
        ),
    ],
)
def test_the_table_a_statement_names_is_qualified(cql: str, expected: str) -> None:
    assert qualified(cql, "ks") == expected


@pytest.mark.parametrize(
    "cql",
    [
        "SELECT release_version FROM system.local",
        "SELECT path FROM other.registrynode WHERE status = ?",
        "SELECT token(path), path FROM ks.registrynode WHERE token(path) > ?",
    ],
)
def test_a_table_already_qualified_is_left_alone(cql: str) -> None:
    assert qualified(cql, "ks") == cql
