"""A real Apache Cassandra node run from the Maven Central jars, configured for this machine.

Node ``i`` (1-based) listens on the ``i``-th loopback address from the stack's (127.0.0.1,
127.0.0.2…) with the standard ports, so a cluster of a few nodes fits on one machine.
Each node owns one token, spread evenly over the ring, and skips the wait for gossip to
settle: a single node answers CQL within seconds of starting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml

from m2m.stack.process import Endpoint, ServiceProcess

NATIVE_PORT = 9042
STORAGE_PORT = 7000
START_TIMEOUT = 240.0

# Cassandra 5.0's conf/jvm17-server.options: the module exports and opens it needs on Java 17.
_JAVA17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
]  # fmt: skip

_LOGBACK = """\
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>{log_dir}/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.SizeAndTimeBasedRollingPolicy">
      <fileNamePattern>{log_dir}/system.log.%d{{yyyy-MM-dd}}.%i.zip</fileNamePattern>
      <maxFileSize>50MB</maxFileSize>
      <maxHistory>3</maxHistory>
      <totalSizeCap>200MB</totalSizeCap>
    </rollingPolicy>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


@dataclass(frozen=True)
class NodeSecurity:
    """A secure node's settings: how it authenticates and authorizes (its ``cassandra.yaml``
    keys), and how to connect to it to see whether it answers."""

    settings: dict[str, object]
    connection: Callable[[], dict[str, Any]]
    """The driver Cluster's keyword arguments for an administrator's connection."""


@dataclass(frozen=True)
class CassandraNode:
    index: int
    cluster_size: int
    state_dir: Path
    lib_dir: Path
    java: str
    heap: str
    first_address: IPv4Address
    """The first node's; the others follow it."""
    security: NodeSecurity | None = None

    @property
    def name(self) -> str:
        return f"cassandra{self.index}"

    @property
    def address(self) -> str:
        return str(self.first_address + self.index - 1)

    @property
    def home(self) -> Path:
        return self.state_dir / self.name

    @property
    def initial_token(self) -> int:
        return -(2**63) + (self.index - 1) * (2**64 // self.cluster_size)

    def cassandra_yaml(self) -> dict[str, object]:
        data = self.home / "data"
        return {
            "cluster_name": "m2m-local",
            "num_tokens": 1,
            "initial_token": str(self.initial_token),
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "data_file_directories": [str(data / "data")],
            "commitlog_directory": str(data / "commitlog"),
            "saved_caches_directory": str(data / "saved_caches"),
            "hints_directory": str(data / "hints"),
            "cdc_raw_directory": str(data / "cdc_raw"),
            "commitlog_sync": "periodic",
            "commitlog_sync_period": "10000ms",
            "seed_provider": [
                {
                    "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                    "parameters": [{"seeds": str(self.first_address)}],
                }
            ],
            "listen_address": self.address,
            "rpc_address": self.address,
            "native_transport_port": NATIVE_PORT,
            "storage_port": STORAGE_PORT,
            "start_native_transport": True,
            "endpoint_snitch": "SimpleSnitch",
            # Test keyspaces come and go; snapshots of them would only fill the disk.
            "auto_snapshot": False,
            "authenticator": "AllowAllAuthenticator",
            "authorizer": "AllowAllAuthorizer",
            **(self.security.settings if self.security else {}),
        }

    def write_config(self) -> None:
        conf = self.home / "conf"
        logs = self.home / "logs"
        for directory in (conf, logs, self.home / "triggers"):
            directory.mkdir(parents=True, exist_ok=True)
        (conf / "cassandra.yaml").write_text(yaml.safe_dump(self.cassandra_yaml()))
        (conf / "logback.xml").write_text(_LOGBACK.format(log_dir=logs))

    def command(self) -> list[str]:
        conf = self.home / "conf"
        jamm = next(self.lib_dir.glob("jamm-*.jar"), None)
        agent = [f"-javaagent:{jamm}"] if jamm is not None else []
        return [
            self.java,
            "-ea",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            # With a 1 GB heap G1 picks 1 MB regions, making every 512 KiB blob block a
            # "humongous" allocation that fragments the heap until it runs out: 4 MB
            # regions keep blocks ordinary objects.
            "-XX:G1HeapRegionSize=4m",
            "-XX:+ParallelRefProcEnabled",
            "-XX:+ExitOnOutOfMemoryError",
            "-Xss256k",
            "-Djava.net.preferIPv4Stack=true",
            *_JAVA17_FLAGS,
            *agent,
            f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile=file://{conf / 'logback.xml'}",
            f"-Dcassandra.logdir={self.home / 'logs'}",
            f"-Dcassandra.storagedir={self.home / 'data'}",
            f"-Dcassandra.triggers_dir={self.home / 'triggers'}",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp",
            f"{conf}:{self.lib_dir}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def service(self) -> ServiceProcess:
        return ServiceProcess(
            name=self.name,
            command=self.command(),
            run_dir=self.state_dir / "run",
            endpoints=[
                Endpoint(self.address, NATIVE_PORT, "CQL"),
                Endpoint(self.address, STORAGE_PORT, "storage"),
            ],
            is_healthy=self.answers_cql,
            marker=str(self.home),
            start_timeout=START_TIMEOUT,
            prepare=self.write_config,
        )

    def answers_cql(self) -> bool:
        """True once the node answers a CQL query (the port opens a little earlier)."""
        if not Endpoint(self.address, NATIVE_PORT, "CQL").is_open():
            return False
        from cassandra.cluster import Cluster
        from cassandra.policies import WhiteListRoundRobinPolicy

        logging.getLogger("cassandra").setLevel(logging.CRITICAL)
        cluster = Cluster(
            [self.address],
            port=NATIVE_PORT,
            connect_timeout=3,
            load_balancing_policy=WhiteListRoundRobinPolicy([self.address]),
            **(self.security.connection() if self.security else {}),
        )
        try:
            session = cluster.connect()
            session.execute("SELECT release_version FROM system.local", timeout=5)
            return True
        except Exception:  # any failure means: not ready yet (roles come a little later)
            return False
        finally:
            cluster.shutdown()
