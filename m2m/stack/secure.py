"""The secure local stack (``m2m stack up --secure``): authenticated, encrypted back ends.

What it adds to the plain stack, all made on the first ``up`` and kept in the state
directory (``tls/`` and ``secrets/``, readable by their owner only):

- a CA (``m2m tls init``'s) and a server certificate naming the stack's addresses;
- Cassandra with PasswordAuthenticator, CassandraAuthorizer and client-to-node TLS that
  requires a client certificate; the superuser ``cassandra`` gets a generated password;
- the platform's role, ``m2m``, with a generated password and only the permissions it
  needs on its keyspace (creating and altering its tables, reading and writing them): it
  cannot drop its keyspace, nor read, change or drop any other;
- nsqd requiring TLS with a client certificate on its TCP port;
- a client certificate for the platform's processes (``client-m2m``), and ``m2m.yaml``:
  the ``cassandra`` and ``nsq`` sections a platform needs to use the stack, the password
  by reference (``{file: <state>/secrets/cassandra-m2m}``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from m2m.config import CassandraConfig, StackConfig, TlsFiles
from m2m.stack.cassandra import NATIVE_PORT, NodeSecurity
from m2m.stack.nsq import LOOKUPD_HTTP_PORT, NSQD_TCP_PORT, NsqdTls
from m2m.stack.process import StackError
from m2m.tls import init_ca, issue_client, write_private
from m2m.tls_client import client_context

SUPERUSER = "cassandra"
DEFAULT_SUPERUSER_PASSWORD = "cassandra"
"""Cassandra's own, until the first ``up --secure`` replaces it."""
PLATFORM_ROLE = "m2m"
PLATFORM_PERMISSIONS = ("CREATE", "ALTER", "SELECT", "MODIFY")
"""On the platform's keyspace: its schema migrations create and alter tables; it reads
and writes them. Not DROP (of the keyspace or a table) nor AUTHORIZE."""
PEM_CONTEXT_FACTORY = "org.apache.cassandra.security.PEMBasedSslContextFactory"


@dataclass(frozen=True)
class StackSecurity:
    state_dir: Path
    addresses: list[str]
    """Where the stack's services listen: its server certificate names them."""

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def keystore(self) -> Path:
        """Cassandra's: its key and certificate in one PEM file."""
        return self.tls_dir / "cassandra-keystore.pem"

    @property
    def client_files(self) -> TlsFiles:
        """The platform's side of every TLS connection to the stack."""
        return TlsFiles(
            ca=self.tls_dir / "ca.pem",
            cert=self.tls_dir / f"client-{PLATFORM_ROLE}.pem",
            key=self.tls_dir / f"client-{PLATFORM_ROLE}.key",
        )

    @property
    def _superuser_file(self) -> Path:
        return self.secrets_dir / f"cassandra-{SUPERUSER}"

    @property
    def platform_password_file(self) -> Path:
        return self.secrets_dir / f"cassandra-{PLATFORM_ROLE}"

    def prepare(self) -> None:
        """Make the certificates (the server's again: the addresses may have changed) and
        the platform's password, once."""
        init_ca(self.tls_dir, self.addresses)
        if not (self.tls_dir / f"client-{PLATFORM_ROLE}.pem").exists():
            issue_client(self.tls_dir, PLATFORM_ROLE)
        server = self.tls_dir / "server"
        pem = server.with_suffix(".key").read_bytes() + server.with_suffix(".pem").read_bytes()
        write_private(self.keystore, pem)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        if not self.platform_password_file.exists():
            write_private(self.platform_password_file, secrets.token_urlsafe(24).encode())

    def nsqd(self) -> NsqdTls:
        return NsqdTls(
            certificate=self.tls_dir / "server.pem",
            key=self.tls_dir / "server.key",
            client_ca=self.tls_dir / "ca.pem",
        )

    def cassandra_node(self) -> NodeSecurity:
        return NodeSecurity(
            settings={
                "authenticator": "PasswordAuthenticator",
                "authorizer": "CassandraAuthorizer",
                "role_manager": "CassandraRoleManager",
                "client_encryption_options": {
                    "enabled": True,
                    "optional": False,
                    "keystore": str(self.keystore),
                    "require_client_auth": True,
                    "truststore": str(self.tls_dir / "ca.pem"),
                    "ssl_context_factory": {"class_name": PEM_CONTEXT_FACTORY},
                },
            },
            connection=self._superuser_connection,
        )

    def _superuser_password(self) -> str:
        try:
            return self._superuser_file.read_text()
        except FileNotFoundError:
            return DEFAULT_SUPERUSER_PASSWORD

    def _superuser_connection(self) -> dict[str, Any]:
        """The driver Cluster's keyword arguments to connect as the superuser."""
        from cassandra.auth import PlainTextAuthProvider

        return {
            "ssl_context": client_context(self.client_files, "stack.tls"),
            "auth_provider": PlainTextAuthProvider(SUPERUSER, self._superuser_password()),
        }

    def provision(self, cassandra: CassandraConfig) -> None:
        """As the superuser: replace its default password, create the platform's role and
        ``cassandra.keyspace``, and grant the role its permissions there. Idempotent."""
        from cassandra.cluster import Cluster

        from m2m.schema import replication_cql

        cluster = Cluster(
            [self.addresses[0]],
            port=NATIVE_PORT,
            protocol_version=5,
            **self._superuser_connection(),
        )
        try:
            session = cluster.connect()
            if not self._superuser_file.exists():
                password = secrets.token_urlsafe(24)
                session.execute(f"ALTER ROLE {SUPERUSER} WITH PASSWORD = %s", (password,))
                write_private(self._superuser_file, password.encode())
            session.execute(
                f"CREATE ROLE IF NOT EXISTS {PLATFORM_ROLE} WITH LOGIN = true AND PASSWORD = %s",
                (self.platform_password_file.read_text(),),
            )
            session.execute(
                f"CREATE KEYSPACE IF NOT EXISTS {cassandra.keyspace} "
                f"WITH replication = {replication_cql(cassandra.replication)}"
            )
            for permission in PLATFORM_PERMISSIONS:
                session.execute(
                    f"GRANT {permission} ON KEYSPACE {cassandra.keyspace} TO {PLATFORM_ROLE}"
                )
        except Exception as exc:
            raise StackError(f"cannot set up the platform's Cassandra role: {exc}") from exc
        finally:
            cluster.shutdown()

    def write_platform_config(self, stack: StackConfig, cassandra: CassandraConfig) -> Path:
        """``<state_dir>/m2m.yaml``: what a platform needs to use this stack."""
        tls = self.client_files.model_dump(mode="json")
        host = str(stack.address)
        config = {
            "cassandra": {
                "contact_points": [host],
                "keyspace": cassandra.keyspace,
                "replication": cassandra.replication,
                "username": PLATFORM_ROLE,
                "password": {"file": str(self.platform_password_file)},
                "tls": tls,
            },
            "nsq": {
                "nsqd_tcp_addresses": [f"{host}:{NSQD_TCP_PORT}"],
                "lookupd_http_addresses": [f"{host}:{LOOKUPD_HTTP_PORT}"],
                "tls": dict(tls),  # not the same object: YAML would write an alias
            },
            "stack": stack.model_dump(mode="json"),
        }
        path = self.state_dir / "m2m.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
