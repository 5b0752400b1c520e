"""Whether the configured platform works, told as checks a person reads one line each.

The groups, each run on a thread of its own so a daemon that does not answer costs its
timeout once, not once per group:

- Cassandra: the contact points answer, every node is up, and the keyspace's schema is
  the latest this package ships (:mod:`m2m.schema`).
- NSQ: each lookup daemon answers and knows nsqd, each of those answers, and no topic or
  channel of the platform holds more than ``nsq.max_depth`` (:mod:`m2m.bus.nsqd_stats`).
- Services, on this host: the receivers' and the web service's configured ports accept
  a connection, the web service's ``/healthz`` answers, and, when ``metrics.listen`` is
  set, that port's ``/readyz`` says the process is ready.
- An edge site's uplink (when ``sync.upstream`` is set): the cloud's nsqd is connected,
  with the backlog and the age of the oldest record waiting (:mod:`m2m.sync.status`).

Nothing here raises for what it checks: a failure is a :class:`Check` that is not ok,
whose detail says what is wrong in words a person acts on.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cassandra.pool import Host

from m2m.bus.nsqd_stats import BusStats, TopicStats, failure_text, read_stats_now, too_deep
from m2m.cassandra import DatabaseError, connect_session
from m2m.config import Config, ListenConfig
from m2m.endpoints import parse_endpoint
from m2m.schema import SchemaStatus, schema_status
from m2m.sync.status import uplink_report

CONNECT_TIMEOUT = 3.0
HTTP_TIMEOUT = 5.0
_ANY_ADDRESS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
"""Where a port listening on every interface (or the default one) is reached locally."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def platform_checks(config: Config) -> list[Check]:
    """Every check, in order: Cassandra, NSQ, the services, then an edge's uplink."""
    groups: tuple[Callable[[Config], list[Check]], ...] = (
        cassandra_checks,
        nsq_checks,
        service_checks,
        uplink_checks,
    )
    with ThreadPoolExecutor(len(groups)) as pool:
        done = list(pool.map(lambda group: group(config), groups))
    return [check for checks in done for check in checks]


# --- Cassandra --------------------------------------------------------------------------


def cassandra_checks(config: Config) -> list[Check]:
    try:
        cluster, _ = connect_session(config.cassandra)
    except DatabaseError as exc:
        return [Check("cassandra", False, str(exc))]
    try:
        nodes = nodes_check(cluster.metadata.all_hosts())
    finally:
        cluster.shutdown()
    try:
        schema = schema_check(schema_status(config.cassandra))
    except DatabaseError as exc:
        schema = Check("schema", False, str(exc))
    return [nodes, schema]


def nodes_check(hosts: Iterable[Host]) -> Check:
    """Every node the cluster knows is up; which Cassandra they run."""
    hosts = list(hosts)
    up = sorted(host.address for host in hosts if host.is_up)
    down = sorted(host.address for host in hosts if not host.is_up)
    versions = sorted({str(host.release_version) for host in hosts if host.release_version})
    detail = f"{len(up)} of {len(hosts)} node(s) up ({', '.join(up) or 'none'})"
    if versions:
        detail += f", Cassandra {', '.join(versions)}"
    if down:
        detail += f"; down or unreachable: {', '.join(down)}"
    return Check("cassandra", bool(up) and not down, detail)


def schema_check(state: SchemaStatus) -> Check:
    """The keyspace has the latest schema this package ships, and the nodes agree on it."""
    keyspace, applied, latest = state.keyspace, state.applied_version, state.latest_version
    if applied is None:
        return Check("schema", False, f"keyspace {keyspace}: no schema (run m2m schema apply)")
    if applied < latest:
        return Check(
            "schema",
            False,
            f"keyspace {keyspace} at version {applied}, this m2m ships {latest} "
            "(run m2m schema apply)",
        )
    if applied > latest:
        return Check(
            "schema",
            False,
            f"keyspace {keyspace} at version {applied}, newer than this m2m knows ({latest}): "
            "upgrade m2m here",
        )
    if not state.nodes_agree:
        versions = "; ".join(
            f"{version}: {', '.join(sorted(nodes))}"
            for version, nodes in state.nodes_by_schema.items()
        )
        return Check(
            "schema", False, f"keyspace {keyspace}: the nodes disagree on the schema ({versions})"
        )
    return Check("schema", True, f"keyspace {keyspace} at version {applied} (latest), nodes agree")


# --- NSQ --------------------------------------------------------------------------------


def nsq_checks(config: Config) -> list[Check]:
    nsq = config.nsq
    if not nsq.lookupd_http_addresses:
        return [Check("nsqlookupd", False, "nsq.lookupd_http_addresses is empty: no nsqd known")]
    return bus_checks(read_stats_now(nsq), nsq.max_depth)


def bus_checks(found: BusStats, max_depth: int) -> list[Check]:
    """A line for each lookup daemon and nsqd, then one for each topic of the platform."""
    checks = []
    for address in sorted({*found.lookupd, *found.lookupd_failures}):
        why, known = found.lookupd_failures.get(address), found.lookupd.get(address, 0)
        detail = why or f"knows {known} nsqd"
        checks.append(Check(f"nsqlookupd {address}", why is None and known > 0, detail))
    nsqds = sorted({*found.nsqd, *found.nsqd_failures})
    for address in nsqds:
        why = found.nsqd_failures.get(address)
        checks.append(Check(f"nsqd {address}", why is None, why or "answers"))
    if not nsqds:
        return checks
    checks += [topic_check(topic, max_depth) for topic in found.topics]
    if not found.topics:
        checks.append(Check("topics", True, "none yet: nothing was published"))
    return checks


def topic_check(topic: TopicStats, max_depth: int) -> Check:
    """What the topic and its channels hold; not ok if one holds more than ``max_depth``."""
    problems = too_deep([topic], max_depth)
    if problems:
        return Check(f"topic {topic.name}", False, "; ".join(str(found) for found in problems))
    parts = [f"holds {topic.depth:,}"]
    parts += [
        f"{channel.name}: {channel.depth:,} waiting, {channel.clients} consumer(s)"
        for channel in topic.channels
    ]
    return Check(f"topic {topic.name}", True, "; ".join(parts))


# --- Services ---------------------------------------------------------------------------


def service_checks(config: Config) -> list[Check]:
    receivers = config.receivers
    checks = [
        *receiver_checks("m2mp", receivers.m2mp),
        *receiver_checks("alip", receivers.alip),
        http_check("web", "web.listen", config.web.listen, "/healthz", healthz_check),
    ]
    if config.metrics.listen is not None:
        checks.append(
            http_check("metrics", "metrics.listen", config.metrics.listen, "/readyz", readyz_check)
        )
    return checks


def local_address(listen: str) -> tuple[str, int] | None:
    """Where this host reaches a TCP server endpoint string (``tcp:3010``,
    ``ssl:port=3011:privateKey=…``, ``tcp:8080:interface=127.0.0.1``); None if it is not
    one, or its port is picked at start (0)."""
    endpoint = parse_endpoint(listen)
    if not endpoint.port:
        return None
    interface = endpoint.interface or ("::" if endpoint.kind == "tcp6" else "")
    return _ANY_ADDRESS.get(interface, interface), endpoint.port


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def receiver_checks(protocol: str, listening: ListenConfig) -> list[Check]:
    """A port check for each endpoint of the receiver's ``listen``: ``m2mp receiver``,
    then (a list of endpoints) ``m2mp receiver #2``… keyed ``receivers.m2mp.listen[1]``…"""
    key = f"receivers.{protocol}.listen"
    if isinstance(listening.listen, str):
        return [port_check(f"{protocol} receiver", key, listening.listen)]
    checks = []
    for index, listen in enumerate(listening.endpoints):
        name = f"{protocol} receiver #{index + 1}" if index else f"{protocol} receiver"
        checks.append(port_check(name, f"{key}[{index}]", listen))
    return checks


def port_check(name: str, key: str, listen: str) -> Check:
    """Something accepts a TCP connection on the port ``listen`` (the value of ``key``)."""
    address = local_address(listen)
    if address is None:
        return Check(name, False, f"{key} {listen!r} names no fixed TCP port: not checked")
    where = _where(*address)
    try:
        with socket.create_connection(address, timeout=CONNECT_TIMEOUT):
            return Check(name, True, f"{where} accepts connections")
    except ConnectionRefusedError:
        return Check(name, False, f"nothing listens on {where} ({key})")
    except OSError as exc:
        return Check(name, False, f"{where} ({key}): {exc.strerror or exc}")


Answer = Callable[[str, int, Any], Check]
"""Reads an HTTP answer: the check's name, the status, the JSON body (None if not JSON)."""


def http_check(name: str, key: str, listen: str, path: str, answer: Answer) -> Check:
    """``GET path`` on the port ``listen`` (the value of ``key``), read by ``answer``."""
    address = local_address(listen)
    if address is None:
        return Check(name, False, f"{key} {listen!r} names no fixed TCP port: not checked")
    url = f"http://{_where(*address)}{path}"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        if isinstance(getattr(exc, "reason", exc), ConnectionRefusedError):
            return Check(name, False, f"nothing listens on {_where(*address)} ({key})")
        return Check(name, False, f"{url}: {failure_text(exc)}")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    return answer(name, status, document)


def healthz_check(name: str, status: int, document: Any) -> Check:
    """``/healthz``: 200 ``{"status": "ok"}`` while the process runs its loop."""
    if status == 200 and isinstance(document, dict) and document.get("status") == "ok":
        return Check(name, True, "/healthz: ok")
    return Check(name, False, f"/healthz answered HTTP {status}: {document!r:.200}")


def readyz_check(name: str, status: int, document: Any) -> Check:
    """``/readyz``: 200 ``{"status": "ready", "checks": {…}}``, or 503 ``"unready"`` with
    what is wrong for each failing check."""
    checks = document.get("checks") if isinstance(document, dict) else None
    if not isinstance(checks, dict) or status not in (200, 503):
        return Check(name, False, f"/readyz answered HTTP {status}: {document!r:.200}")
    if status == 200:
        return Check(name, True, f"/readyz: ready ({', '.join(sorted(checks))} ok)")
    wrong = "; ".join(f"{check}: {what}" for check, what in checks.items() if what != "ok")
    return Check(name, False, f"/readyz: unready: {wrong or 'no reason given'}")


# --- An edge site's uplink --------------------------------------------------------------


def uplink_checks(config: Config) -> list[Check]:
    if config.sync.upstream is None:
        return []
    try:
        report = uplink_report(config)
    except DatabaseError as exc:
        return [Check("uplink", False, f"its status cannot be read: {exc}")]
    waiting = "no sync channel yet" if report.backlog is None else f"{report.backlog} waiting"
    if report.oldest_unsent is not None:
        waiting += f", the oldest for {report.oldest_unsent:.0f} s"
    return [Check("uplink", report.ok, f"{report.state} to {report.upstream}; {waiting}")]
