"""The keyspace's schema: versioned CQL files applied in order, each once.

Files are named ``NNN_what.cql``; ``NNN`` is the schema version they bring. The versions
applied are recorded in the keyspace (table ``m2m_schema_version``), and every statement is
written to be idempotent (``IF NOT EXISTS``), so applying again, or over a keyspace the
original platform created, changes nothing that is already there.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cassandra import InvalidRequest
from cassandra.cluster import Session

from m2m.cassandra import DatabaseError, connect_session
from m2m.config import CassandraConfig

VERSION_TABLE = "m2m_schema_version"
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.cql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class SchemaStatus:
    keyspace: str
    applied_version: int | None
    latest_version: int
    nodes_by_schema: dict[str, list[str]]
    """Each schema version UUID the nodes report, with the nodes reporting it."""

    @property
    def nodes_agree(self) -> bool:
        return len(self.nodes_by_schema) == 1


def schema_dir() -> Path:
    """The CQL files: beside the package in a checkout, else where the package installed them."""
    checkout = Path(__file__).resolve().parent.parent
    for candidate in (
        checkout / "schema" if (checkout / "setup.cfg").is_file() else None,
        Path(sys.prefix) / "share" / "m2m" / "schema",
    ):
        if candidate is not None and any(candidate.glob("*.cql")):
            return candidate
    raise DatabaseError("the schema files (schema/*.cql) are not installed with this package")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    migrations = []
    for path in sorted((directory or schema_dir()).glob("*.cql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise DatabaseError(f"{path}: schema files must be named NNN_name.cql")
        migrations.append(
            Migration(int(match.group(1)), match.group(2), split_statements(path.read_text()))
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two schema files share a version in {directory or schema_dir()}")
    return migrations


def split_statements(cql: str) -> tuple[str, ...]:
    """The statements of a CQL file, without ``--`` comments (none may hold a ``;``)."""
    text = "\n".join(line.split("--", 1)[0] for line in cql.splitlines())
    return tuple(" ".join(s.split()) for s in text.split(";") if s.strip())


def replication_cql(replication: dict[str, str | int]) -> str:
    strategy = str(replication.get("class", ""))
    if strategy not in ("SimpleStrategy", "NetworkTopologyStrategy"):
        raise DatabaseError(
            "cassandra.replication.class must be SimpleStrategy or NetworkTopologyStrategy"
        )
    factors = {k: v for k, v in replication.items() if k != "class"}
    if strategy == "SimpleStrategy" and set(factors) != {"replication_factor"}:
        raise DatabaseError("SimpleStrategy takes exactly one key: replication_factor")
    if not factors or not all(str(v).isdigit() and int(v) > 0 for v in factors.values()):
        raise DatabaseError(
            "cassandra.replication needs a positive replication factor per datacenter"
        )
    entries = [f"'class': '{strategy}'"] + [f"'{k}': '{int(v)}'" for k, v in factors.items()]
    return "{" + ", ".join(entries) + "}"


def apply_schema(config: CassandraConfig) -> list[Migration]:
    """Create the keyspace if needed and apply every migration not yet recorded in it.

    The keyspace is created only when it does not exist: Cassandra checks the permission
    to create keyspaces even for ``IF NOT EXISTS``, and a platform's role may hold
    permissions on its own keyspace only (see ``m2m stack up --secure``).
    """
    replication = replication_cql(config.replication)
    cluster, session = connect_session(config)
    try:
        if config.keyspace not in cluster.metadata.keyspaces:
            session.execute(
                f"CREATE KEYSPACE IF NOT EXISTS {config.keyspace} WITH replication = {replication}"
            )
        session.set_keyspace(config.keyspace)
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(version int PRIMARY KEY, name text, applied_at timestamp)"
        )
        done = _applied_versions(session)
        applied = []
        for migration in load_migrations():
            if migration.version in done:
                continue
            for statement in migration.statements:
                _execute_ddl(session, statement)
            session.execute(
                f"INSERT INTO {VERSION_TABLE} (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, datetime.now(UTC)),
            )
            applied.append(migration)
        return applied
    finally:
        cluster.shutdown()


def _execute_ddl(session: Session, statement: str) -> None:
    try:
        session.execute(statement)
    except InvalidRequest as exc:
        raise DatabaseError(f"schema statement failed: {statement}: {exc}") from exc


def _applied_versions(session: Session) -> set[int]:
    return {row.version for row in session.execute(f"SELECT version FROM {VERSION_TABLE}")}


def schema_status(config: CassandraConfig) -> SchemaStatus:
    cluster, session = connect_session(config)
    try:
        latest = max((m.version for m in load_migrations()), default=0)
        keyspace = cluster.metadata.keyspaces.get(config.keyspace)
        applied = None
        if keyspace is not None and VERSION_TABLE in keyspace.tables:
            session.set_keyspace(config.keyspace)
            applied = max(_applied_versions(session), default=None)
        nodes: dict[str, list[str]] = {}
        local = session.execute("SELECT schema_version, rpc_address FROM system.local").one()
        nodes.setdefault(str(local.schema_version), []).append(str(local.rpc_address))
        for peer in session.execute("SELECT schema_version, peer FROM system.peers"):
            nodes.setdefault(str(peer.schema_version), []).append(str(peer.peer))
        return SchemaStatus(config.keyspace, applied, latest, nodes)
    finally:
        cluster.shutdown()


def drop_keyspace(config: CassandraConfig) -> None:
    """Drop the configured keyspace and all its data (for throw-away keyspaces)."""
    cluster, session = connect_session(config)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {config.keyspace}", timeout=120)
    finally:
        cluster.shutdown()
