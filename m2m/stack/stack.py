"""The local stack as a whole: which services run, in which order, and their state on disk.

``up`` provisions what is missing (cached per user), starts what is not running and waits
until every service answers; it is safe to run again. The number of Cassandra nodes chosen
at ``up``, and whether the stack is secure (see :mod:`m2m.stack.secure`), are remembered in
the state directory, so ``status`` and ``down`` need no options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from m2m.config import CassandraConfig, StackConfig
from m2m.stack import nsq, provision
from m2m.stack.cassandra import CassandraNode
from m2m.stack.process import ServiceProcess, StackError
from m2m.stack.secure import StackSecurity

MAX_NODES = 9


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    healthy: bool
    endpoints: str
    log: Path


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir.expanduser().resolve()
        self.cache_dir = config.cache_dir.expanduser().resolve()

    @property
    def _nsq(self) -> provision.Artifact:
        return provision.nsq_artifact(self.cache_dir, self.config.nsq_version)

    @property
    def _cassandra(self) -> provision.Artifact:
        return provision.cassandra_artifact(self.cache_dir, self.config.cassandra_version)

    @property
    def _nodes_file(self) -> Path:
        return self.state_dir / "nodes"

    @property
    def _secure_file(self) -> Path:
        return self.state_dir / "secure"

    def is_secure(self) -> bool:
        return self._secure_file.exists()

    def security(self, nodes: int | None = None) -> StackSecurity:
        nodes = self.node_count() if nodes is None else nodes
        return StackSecurity(self.state_dir, [self._address(i) for i in range(1, nodes + 1)])

    def _address(self, node: int) -> str:
        return str(self.config.address + node - 1)

    def node_count(self) -> int:
        try:
            return int(self._nodes_file.read_text().strip())
        except (OSError, ValueError):
            return 1

    def services(self, nodes: int | None = None, java: str = "java") -> list[ServiceProcess]:
        """Every service in start order: the NSQ daemons, then the Cassandra nodes."""
        nodes = self.node_count() if nodes is None else nodes
        nsq_bin = self._nsq.home / "bin"
        cassandra_lib = self._cassandra.home / "lib"
        host = str(self.config.address)
        security = self.security(nodes) if self.is_secure() else None
        return [
            nsq.nsqlookupd(nsq_bin, self.state_dir, host),
            nsq.nsqd(nsq_bin, self.state_dir, host, security.nsqd() if security else None),
            *(
                CassandraNode(
                    i,
                    nodes,
                    self.state_dir,
                    cassandra_lib,
                    java,
                    self._heap(nodes),
                    self.config.address,
                    security.cassandra_node() if security else None,
                ).service()
                for i in range(1, nodes + 1)
            ),
        ]

    def _heap(self, nodes: int) -> str:
        # A 3-node cluster on one 24 GB machine: each node gets half the single-node heap.
        return self.config.cassandra_heap if nodes == 1 else "512M"

    def service(self, name: str, java: str = "java") -> ServiceProcess:
        for candidate in self.services(java=java):
            if candidate.name == name:
                return candidate
        names = ", ".join(s.name for s in self.services())
        raise StackError(f"no service named '{name}' in this stack (it has: {names})")

    def up(self, nodes: int = 1, secure: CassandraConfig | None = None) -> list[ServiceStatus]:
        """Start the stack; ``secure``: the secure one, its platform role granted
        ``secure.keyspace`` (then ``m2m.yaml`` in the state directory says how to use it)."""
        if not 1 <= nodes <= MAX_NODES:
            raise StackError(f"--nodes must be between 1 and {MAX_NODES}")
        running = [service.name for service in self.services() if service.pid() is not None]
        if any(name.startswith("cassandra") for name in running) and nodes != self.node_count():
            raise StackError(
                f"the stack runs {self.node_count()} Cassandra node(s); "
                f"run 'm2m stack down' before starting it with {nodes}"
            )
        if running and (secure is not None) != self.is_secure():
            state = "secure" if self.is_secure() else "not secure"
            raise StackError(f"the stack runs {state}; run 'm2m stack down' before changing it")
        java = _java()
        provision.ensure_all([self._nsq, self._cassandra])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._nodes_file.write_text(f"{nodes}\n")
        security = self.security(nodes)
        if secure is not None:
            self._secure_file.touch()
            security.prepare()
        else:
            self._secure_file.unlink(missing_ok=True)
        services = self.services(nodes, java)
        for service in services:
            # One at a time: Cassandra nodes refuse to join the ring concurrently.
            service.start()
            service.wait_healthy()
        if secure is not None:
            security.provision(secure)
            security.write_platform_config(self.config, secure)
            for service in services:
                service.wait_healthy()  # its check now logs in with the new password
        return self.status()

    def start(self, name: str) -> ServiceStatus:
        service = self.service(name, _java())
        service.start()
        service.wait_healthy()
        return self._status_of(service)

    def stop(self, name: str, kill: bool = False) -> bool:
        return self.service(name).stop(kill=kill)

    def down(self) -> list[str]:
        """Stop every running service, Cassandra first; returns the names it stopped."""
        stopped = []
        for service in reversed(self.services()):
            if service.stop():
                stopped.append(service.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [self._status_of(service) for service in self.services()]

    def _status_of(self, service: ServiceProcess) -> ServiceStatus:
        pid = service.pid()
        return ServiceStatus(
            name=service.name,
            pid=pid,
            healthy=pid is not None and service.is_healthy(),
            endpoints=", ".join(str(e) for e in service.endpoints),
            log=service.log_file,
        )


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else None
    if java is None or not Path(java).exists():
        java = provision.require_tool("java", "run Apache Cassandra")
    major = provision.java_major_version(java)
    if major not in (11, 17):
        raise StackError(
            f"{java} is Java {major}; Cassandra 5.0 runs on Java 11 or 17 "
            f"(set JAVA_HOME to one of them)"
        )
    return java
