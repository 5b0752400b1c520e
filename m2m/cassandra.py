"""The Cassandra connection shared by every store: prepared statements, asyncio, back-pressure.

The driver does its I/O on its own thread; :class:`Database` turns its response futures
into asyncio awaitables (one ``call_soon_threadsafe`` per response), so the receivers and
workers running on the asyncio reactor never block on a query. At most
``cassandra.max_in_flight`` requests are outstanding per process: the rest wait their turn
instead of piling up in the driver.

Everything a store needs is here: ``execute`` for one page of rows, ``pages`` to walk a
large result lazily, page by page, and ``prepare`` (cached per statement text).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    ResponseFuture,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement

from m2m.config import CassandraConfig
from m2m.errors import M2MError

log = logging.getLogger(__name__)

Row = Any
"""A row as the driver returns it (a named tuple)."""


class DatabaseError(M2MError):
    """Cassandra cannot be reached or refused a request; the message says which."""


def consistency_level(name: str) -> int:
    try:
        return int(ConsistencyLevel.name_to_value[name.upper()])
    except KeyError:
        names = ", ".join(sorted(ConsistencyLevel.name_to_value))
        raise DatabaseError(f"unknown consistency level '{name}' (one of: {names})") from None


def open_cluster(config: CassandraConfig) -> Cluster:
    """A driver Cluster for the configured contact points, consistency and credentials."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        consistency_level=consistency_level(config.consistency),
        request_timeout=30,
    )
    auth = (
        PlainTextAuthProvider(config.username, config.password or "") if config.username else None
    )
    return Cluster(
        contact_points=list(config.contact_points),
        port=config.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        protocol_version=5,
    )


def connect_session(
    config: CassandraConfig, keyspace: str | None = None
) -> tuple[Cluster, Session]:
    """Connect, mapping "nothing answers" to a DatabaseError that names the addresses."""
    cluster = open_cluster(config)
    try:
        return cluster, cluster.connect(keyspace)
    except Exception as exc:
        cluster.shutdown()
        where = ", ".join(f"{host}:{config.port}" for host in config.contact_points)
        raise DatabaseError(
            f"cannot use Cassandra at {where}"
            + (f" (keyspace '{keyspace}')" if keyspace else "")
            + f": {exc}"
        ) from exc


class Database:
    """One process's handle on the keyspace, for asyncio code."""

    def __init__(self, cluster: Cluster, session: Session, max_in_flight: int) -> None:
        self.cluster = cluster
        self.session = session
        self._slots = asyncio.Semaphore(max_in_flight)
        self._prepared: dict[str, PreparedStatement] = {}

    @classmethod
    def connect(cls, config: CassandraConfig) -> Database:
        cluster, session = connect_session(config, config.keyspace)
        return cls(cluster, session, config.max_in_flight)

    def close(self) -> None:
        self.cluster.shutdown()

    def prepare(self, cql: str) -> PreparedStatement:
        """The prepared statement for ``cql``, prepared once per process."""
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self.session.prepare(cql)
            self._prepared[cql] = statement
        return statement

    async def execute(self, cql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; the rows of its first page (all of them for small results)."""
        rows, _ = await self._request(cql, params, None, None)
        return rows

    async def pages(
        self, cql: str, params: Sequence[Any] = (), page_size: int = 1000
    ) -> AsyncIterator[list[Row]]:
        """Walk a large result one page at a time; the next page is asked for on demand."""
        paging_state: bytes | None = None
        while True:
            rows, paging_state = await self._request(cql, params, page_size, paging_state)
            if rows:
                yield rows
            if paging_state is None:
                return

    async def _request(
        self,
        cql: str,
        params: Sequence[Any],
        page_size: int | None,
        paging_state: bytes | None,
    ) -> tuple[list[Row], bytes | None]:
        statement = self.prepare(cql)
        if page_size is not None:
            statement = statement.bind(params)
            statement.fetch_size = page_size
            params = ()
        async with self._slots:
            response = await _completed(
                self.session.execute_async(statement, params or None, paging_state=paging_state)
            )
        result = response.result()
        return list(result.current_rows), result.paging_state


def _completed(response: ResponseFuture) -> asyncio.Future[ResponseFuture]:
    """An asyncio future that resolves (on this loop) when the driver's response arrives."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[ResponseFuture] = loop.create_future()

    def resolve(_: object) -> None:
        loop.call_soon_threadsafe(_settle, future, response, None)

    def fail(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, future, response, exc)

    response.add_callbacks(resolve, fail)
    return future


def _settle(
    future: asyncio.Future[ResponseFuture],
    response: ResponseFuture,
    exc: BaseException | None,
) -> None:
    if future.done():  # cancelled while the request was out
        return
    if exc is None:
        future.set_result(response)
    else:
        future.set_exception(exc)
